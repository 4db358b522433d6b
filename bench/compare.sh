#!/usr/bin/env bash
# verfs beside its peers, in one go. Medians of N runs; every ratio is taken within one run, then
# the median of those ratios is printed.
#   1  verfs put of the dataset into a fresh store (MB/s, peak RSS, stored/logical), an incremental
#      put after gen-dataset mutate, get with a sha256 check; with --big, put of one 4 GiB file
#   2  the same tree with cp -a + sync, restic backup, borg create, rustic backup (MB/s, peak RSS,
#      stored bytes), each beside verfs put of the same run
#   3  through a mount: cp -a + sync, dd bs=1M conv=fsync write and cold read of an incompressible
#      file, on verfs, on bindfs over a host dir, and dd on the host dir itself; mount daemon RSS
#      when idle and after that work
#   4  create/stat/rename/unlink of --files empty files (ops/s) on verfs, bindfs and the host dir
#   5  1, 2 and 4 concurrent verfs put of different trees into one store (aggregate MB/s)
#
#   bench/compare.sh [--size-mb 1024] [--runs 3] [--file-mb 2048] [--files 10000] [--only 1,2,3,4,5]
#                    [--big] [--install]
#
# The datasets come from ../shared/bench/gen-dataset (GEN_DATASET overrides) and are cached in
# target/bench-data (BENCH_DATA overrides; shared with ingest.sh, mount.sh, gc.sh). VERFS_BIN
# names a verfs binary to use instead of building one in $CARGO_TARGET_DIR (default target).
# Needs /usr/bin/time; sections 3 and 4 need fuse3; the cold reads need root (drop_caches). A peer
# that is not installed is skipped with a note (--install installs them). Every step that could
# hang runs under `timeout` (STEP_TIMEOUT seconds, default 1200).
set -euo pipefail
cd "$(dirname "$0")/.."
CMDLINE="$(printf '%q ' "$0" "$@")"
SIZE=1024 RUNS=3 FILE_MB=2048 NFILES=10000 ONLY=1,2,3,4,5 INSTALL=0 BIG=0
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --size-mb) SIZE=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --file-mb) FILE_MB=$2; shift 2 ;;
    --files) NFILES=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --big) BIG=1; shift ;;
    --install) INSTALL=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
for n in "$SIZE" "$RUNS" "$FILE_MB" "$NFILES"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "bench: not a positive number: $n" >&2; exit 2; }
done
[[ $ONLY =~ ^[1-5](,[1-5])*$ ]] || { echo "bench: --only takes a comma list of 1-5, not $ONLY" >&2; exit 2; }
want() { [[ ",$ONLY," == *",$1,"* ]]; }
T=${STEP_TIMEOUT:-1200} # seconds, for every step that could hang
GEN=${GEN_DATASET:-../shared/bench/gen-dataset}
[ -x "$GEN" ] || { echo "bench: $GEN not found (set GEN_DATASET)" >&2; exit 2; }
say() { echo "compare: $*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }

# --- tools ---------------------------------------------------------------------------------------
if [ "$INSTALL" = 1 ]; then
  pkgs=()
  have restic || pkgs+=(restic)
  have borg || pkgs+=(borgbackup)
  have bindfs || pkgs+=(bindfs)
  have fusermount3 || pkgs+=(fuse3)
  [ -x /usr/bin/time ] || pkgs+=(time)
  if [ ${#pkgs[@]} -gt 0 ]; then
    say "apt-get install ${pkgs[*]}"
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}"; } >&2 ||
      say "apt-get install failed; the missing tools are skipped"
  fi
  if ! have rustic; then
    say "cargo install rustic-rs (takes a while)"
    cargo install --locked rustic-rs >&2 || say "cargo install rustic-rs failed; rustic is skipped"
    PATH=$PATH:${CARGO_HOME:-$HOME/.cargo}/bin
  fi
fi
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time not found (run with --install)" >&2; exit 2; }
if want 3 || want 4; then
  have fusermount3 || { echo "bench: fusermount3 not found (install fuse3 or run with --install)" >&2; exit 2; }
  have python3 || { echo "bench: python3 not found" >&2; exit 2; }
fi
NOTES=()
note() { NOTES+=("$1"); say "$1"; }
skipped() { note "skipped: $1 not installed (run with --install)"; }
if want 2; then
  for t in restic borg rustic; do have $t || skipped $t; done
fi
if want 3 || want 4; then have bindfs || skipped bindfs; fi

if [ -n "${VERFS_BIN:-}" ]; then
  V=$(realpath "$VERFS_BIN")
  [ -x "$V" ] || { echo "bench: VERFS_BIN=$VERFS_BIN is not executable" >&2; exit 2; }
else
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
  timeout 1800 cargo build --release -q -p verfs-cli --bin verfs
  V=$(realpath "$CARGO_TARGET_DIR/release/verfs")
fi

# --- datasets (cached) ---------------------------------------------------------------------------
BD=${BENCH_DATA:-$PWD/target/bench-data}
DATA=$BD/$SIZE
QSIZE=$((SIZE / 4)); [ "$QSIZE" -ge 1 ] || QSIZE=1
if want 1 || want 2 || want 3; then
  if [ ! -f "$DATA/base/.dataset-root" ]; then # same layout as bench/ingest.sh; base appears last
    say "generating the $SIZE MiB dataset in $DATA"
    rm -rf "$DATA/base" "$DATA/mut" "$DATA/mut.sum" "$DATA/.base.tmp" "$DATA/.mut.tmp"; mkdir -p "$DATA"
    timeout "$T" "$GEN" gen "$DATA/.base.tmp" --size-mb "$SIZE" >/dev/null
    cp -a "$DATA/.base.tmp" "$DATA/.mut.tmp"
    timeout "$T" "$GEN" mutate "$DATA/.mut.tmp" --round 1 >/dev/null
    mv "$DATA/.mut.tmp" "$DATA/mut"; mv "$DATA/.base.tmp" "$DATA/base"
  fi
  if [ ! -f "$DATA/mut.sum" ]; then # every file of the mutated tree, for the get check
    (cd "$DATA/mut" && find . -type f -print0 | sort -z | xargs -0 sha256sum) > "$DATA/.mut.sum.tmp"
    mv "$DATA/.mut.sum.tmp" "$DATA/mut.sum"
  fi
  LOGICAL=$(du -sb --apparent-size "$DATA/base" | cut -f1)
  MUTLOG=$(du -sb --apparent-size "$DATA/mut" | cut -f1)
fi
SEEDLOG=()
if want 5; then
  for k in 1 2 3 4; do # different trees, one per concurrent put
    D=$DATA/seed$k
    if [ ! -f "$D/.dataset-root" ]; then
      say "generating tree $k ($QSIZE MiB, seed $k) in $D"
      rm -rf "$D" "$D.tmp"; mkdir -p "$DATA"
      timeout "$T" "$GEN" gen "$D.tmp" --size-mb "$QSIZE" --seed "$k" >/dev/null
      mv "$D.tmp" "$D"
    fi
    SEEDLOG[k]=$(du -sb --apparent-size "$D" | cut -f1)
  done
fi
BIGFILE=$BD/urandom-4g.bin
if want 1 && [ "$BIG" = 1 ] && [ "$(stat -c %s "$BIGFILE" 2>/dev/null || echo 0)" != 4294967296 ]; then
  say "making $BIGFILE (4 GiB from /dev/urandom, once)"
  mkdir -p "$BD"; timeout "$T" head -c 4G /dev/urandom > "$BIGFILE.tmp"; mv "$BIGFILE.tmp" "$BIGFILE"
fi

# --- work dir, mounts, cleanup -------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/verfs-compare.XXXXXX")
LOG=$WORK/log; : > "$LOG"
VMP= VS= DPID= DLOG= BMP= BPID= # the one verfs mount and the one bindfs mount that may be up
BGPIDS=()                      # concurrent puts of section 5
mounted() { grep -qF " $1 fuse" /proc/mounts; }
alive() { [ -r "/proc/$1/stat" ] && ! awk '{sub(/.*\) /, ""); exit $1 == "Z" ? 0 : 1}' "/proc/$1/stat"; }
mount_verfs() { # mount_verfs STORE MOUNTPOINT: fresh mount, sets DPID
  mkdir -p "$2"
  local out
  out=$(TMPDIR=$WORK timeout 60 "$V" -s "$1" mount "$2" -d 2>&1) || { echo "bench: verfs mount failed: $out" >&2; exit 1; }
  VS=$1 VMP=$2
  DPID=$(sed -n 's/.*daemon pid \([0-9][0-9]*\).*/\1/p' <<<"$out")
  DLOG=$(sed -n 's/.*, log \([^)]*\)).*/\1/p' <<<"$out")
  [ -n "$DPID" ] && mounted "$2" || { echo "bench: unexpected verfs mount output: $out" >&2; exit 1; }
}
umount_verfs() { # flush and unmount; on failure detach lazily and end the daemon we started
  [ -n "$VMP" ] || return 0
  if mounted "$VMP"; then
    timeout 300 "$V" -s "$VS" umount "$VMP" >>"$LOG" 2>&1 || {
      echo "bench: verfs umount $VMP failed; detaching lazily" >&2
      timeout 30 fusermount3 -uz "$VMP" || true
    }
  fi
  if [ -n "$DPID" ]; then
    for _ in $(seq 100); do alive "$DPID" || break; sleep 0.1; done
    if alive "$DPID"; then echo "bench: mount daemon $DPID still running; SIGTERM" >&2; kill "$DPID" || true; fi
  fi
  VMP= DPID= DLOG=
}
mount_bindfs() { # mount_bindfs SRC MOUNTPOINT: bindfs in the foreground, in the background here
  mkdir -p "$1" "$2"
  bindfs -f "$1" "$2" >>"$LOG" 2>&1 &
  BPID=$! BMP=$2
  for _ in $(seq 100); do mounted "$2" && return 0; alive "$BPID" || break; sleep 0.1; done
  echo "bench: bindfs $1 $2 did not come up" >&2; exit 1
}
umount_bindfs() {
  [ -n "$BMP" ] || return 0
  if mounted "$BMP"; then
    timeout 120 fusermount3 -u "$BMP" || { echo "bench: fusermount3 -u $BMP failed; detaching lazily" >&2; timeout 30 fusermount3 -uz "$BMP" || true; }
  fi
  if [ -n "$BPID" ]; then
    for _ in $(seq 100); do alive "$BPID" || break; sleep 0.1; done
    if alive "$BPID"; then echo "bench: bindfs $BPID still running; SIGTERM" >&2; kill "$BPID" || true; fi
    wait "$BPID" 2>/dev/null || true
  fi
  BMP= BPID=
}
cleanup() {
  local rc=$? p
  if [ "$rc" != 0 ]; then
    echo "bench: failed (exit $rc); last lines of $LOG:" >&2; tail -n 20 "$LOG" >&2 || true
    if [ -n "$DLOG" ] && [ -s "$DLOG" ]; then echo "bench: mount daemon log $DLOG:" >&2; tail -n 20 "$DLOG" >&2; fi
  fi
  for p in "${BGPIDS[@]}"; do alive "$p" && kill "$p" 2>/dev/null || true; done
  for p in "${BGPIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  umount_verfs || true
  umount_bindfs || true
  if grep -qF " $WORK/" /proc/mounts; then # never rm -rf through a live mount
    echo "bench: something is still mounted under $WORK; not removing it" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- helpers -------------------------------------------------------------------------------------
median() { sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.4f", b-a}'; }
mbps() { awk -v n="$1" -v s="$2" 'BEGIN{printf "%.3f", n/1e6/s}'; } # mbps BYTES SECS
mb() { awk -v n="$1" 'BEGIN{printf "%.3f", n/1e6}'; }
size_of() { du -sb "$1" | cut -f1; }
declare -A R # R[key] = space-separated values, one per run
add() { R[$1]="${R[$1]:-} $2"; }
timed() { # timed CMD...: run under /usr/bin/time; sets SECS (wall) and RSS (peak, MiB); fails loudly
  local t0; t0=$(now)
  /usr/bin/time -f '%M' -o "$WORK/time.out" timeout "$T" "$@" </dev/null >>"$LOG" 2>&1 ||
    { echo "bench: command failed: $*" >&2; exit 1; }
  SECS=$(since "$t0")
  RSS=$(tail -n 1 "$WORK/time.out" | awk '{printf "%.1f", $1/1024}')
}
warm() { timeout "$T" sh -c 'find "$1" -type f -print0 | xargs -0 cat > /dev/null' _ "$1"; }
settle() { timeout "$T" sync; } # untimed sync, so no step pays for the dirty pages of the last one
DROP_OK=1
if [ "$(id -u)" != 0 ] || [ ! -w /proc/sys/vm/drop_caches ]; then DROP_OK=0; fi
drop_caches() { # returns 1 when the page cache cannot be dropped
  settle
  [ "$DROP_OK" = 1 ] || return 1
  { echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null || { DROP_OK=0; return 1; }
}
hwm() { awk -v k="$2:" '$1 == k {printf "%.1f", $2/1024}' "/proc/$1/status"; } # hwm PID VmHWM|VmRSS -> MiB

cat > "$WORK/small.py" <<'EOF'
import os, sys, time
d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(d)
names = [os.path.join(d, "f%06d" % i) for i in range(n)]
rates = []
t = time.perf_counter()
for p in names:
    os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
rates.append(n / (time.perf_counter() - t))
t = time.perf_counter()
for p in names:
    os.stat(p)
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

FILE_BYTES=$((FILE_MB * 1048576))
SRC=$WORK/src.bin
if want 3; then # incompressible source for the dd write, made once per invocation (not timed)
  say "making the $FILE_MB MiB dd source from /dev/urandom"
  timeout "$T" dd if=/dev/urandom of="$SRC" bs=1M count="$FILE_MB" iflag=fullblock status=none
  [ "$(stat -c %s "$SRC")" = "$FILE_BYTES" ] || { echo "bench: could not make $SRC" >&2; exit 1; }
fi

ver() { have "$1" && "$@" 2>/dev/null | head -n 1 | grep -oE '[0-9]+\.[0-9]+(\.[0-9]+)?' | head -n 1 || echo absent; }
VERSIONS="verfs $("$V" --version | awk '{print $2}'), restic $(ver restic version), borg $(ver borg --version), rustic $(ver rustic --version), bindfs $(ver bindfs --version)"

# --- sections ------------------------------------------------------------------------------------
s1_2() { # verfs put (sections 1 and 2 both need it), then section 1's rest, then the peers
  local S=$WORK/s12 OUT=$WORK/out
  rm -rf "$S"; timeout 60 "$V" init "$S" >>"$LOG" 2>&1
  warm "$DATA/base"; settle
  timed "$V" -s "$S" put "$DATA/base" /data
  add put.mbps "$(mbps "$LOGICAL" "$SECS")"; add put.rss "$RSS"
  add put.ratio "$(awk -v a="$(size_of "$S/packs")" -v b="$LOGICAL" 'BEGIN{printf "%.4f", a/b}')"
  add put.stored "$(mb "$(size_of "$S")")"
  if want 1; then
    warm "$DATA/mut"; settle
    timed "$V" -s "$S" put "$DATA/mut/." /data
    add inc.mbps "$(mbps "$MUTLOG" "$SECS")"; add inc.rss "$RSS"
    rm -rf "$OUT"; settle
    timed "$V" -s "$S" get /data "$OUT"
    add get.mbps "$(mbps "$(du -sb --apparent-size "$OUT" | cut -f1)" "$SECS")"; add get.rss "$RSS"
    # An incremental put adds and replaces but never deletes, so check every source file's sha256.
    (cd "$OUT" && timeout "$T" sha256sum -c --quiet "$DATA/mut.sum") >>"$LOG" 2>&1 ||
      { echo "bench: verfs get returned content different from the mutated tree!" >&2; exit 1; }
    rm -rf "$OUT"
    if [ "$BIG" = 1 ]; then
      rm -rf "$S"; timeout 60 "$V" init "$S" >>"$LOG" 2>&1
      timeout "$T" cat "$BIGFILE" > /dev/null; settle
      timed "$V" -s "$S" put "$BIGFILE" /big
      add big.mbps "$(mbps 4294967296 "$SECS")"; add big.rss "$RSS"
    fi
  fi
  rm -rf "$S"
  want 2 || return 0
  local C=$WORK/cp
  rm -rf "$C"; warm "$DATA/base"; settle
  timed sh -c 'cp -a "$1" "$2" && sync' _ "$DATA/base" "$C"
  add cp.mbps "$(mbps "$LOGICAL" "$SECS")"; add cp.rss "$RSS"; add cp.stored "$(mb "$(size_of "$C")")"
  rm -rf "$C"
  if have restic; then
    local RR=$WORK/restic-repo
    rm -rf "$RR" "$WORK/restic-cache"
    export RESTIC_PASSWORD=verfs-compare RESTIC_CACHE_DIR=$WORK/restic-cache
    timeout 120 restic -r "$RR" init -q </dev/null >>"$LOG" 2>&1
    warm "$DATA/base"; settle
    timed restic -r "$RR" backup -q "$DATA/base"
    add restic.mbps "$(mbps "$LOGICAL" "$SECS")"; add restic.rss "$RSS"; add restic.stored "$(mb "$(size_of "$RR")")"
    rm -rf "$RR" "$WORK/restic-cache"
  fi
  if have borg; then
    local BR=$WORK/borg-repo
    rm -rf "$BR" "$WORK/borg-base"
    export BORG_BASE_DIR=$WORK/borg-base BORG_PASSPHRASE= BORG_DISPLAY_PASSPHRASE=no \
      BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
    timeout 120 borg init -e none "$BR" </dev/null >>"$LOG" 2>&1
    warm "$DATA/base"; settle
    timed borg create "$BR::a" "$DATA/base"
    add borg.mbps "$(mbps "$LOGICAL" "$SECS")"; add borg.rss "$RSS"; add borg.stored "$(mb "$(size_of "$BR")")"
    rm -rf "$BR" "$WORK/borg-base"
  fi
  if have rustic; then
    local UR=$WORK/rustic-repo
    rm -rf "$UR" "$WORK/rustic-cache"
    export RUSTIC_PASSWORD=verfs-compare RUSTIC_CACHE_DIR=$WORK/rustic-cache RUSTIC_NO_PROGRESS=true
    timeout 120 rustic -r "$UR" init </dev/null >>"$LOG" 2>&1
    warm "$DATA/base"; settle
    timed rustic -r "$UR" backup "$DATA/base"
    add rustic.mbps "$(mbps "$LOGICAL" "$SECS")"; add rustic.rss "$RSS"; add rustic.stored "$(mb "$(size_of "$UR")")"
    rm -rf "$UR" "$WORK/rustic-cache"
  fi
}

through() { # through TARGET DIR RUN: cp -a + sync, dd write + fsync, cold dd read, in DIR
  local tg=$1 D=$2 r=$3 t0
  if [ "$tg" != host ]; then
    warm "$DATA/base"; settle
    t0=$(now)
    timeout "$T" cp -a "$DATA/base" "$D/tree"; timeout "$T" sync
    add "cp.$tg" "$(mbps "$LOGICAL" "$(since "$t0")")"
    if [ "$r" = 1 ]; then # the tree is the same as the source (once, not timed)
      timeout "$T" diff -r --no-dereference "$DATA/base" "$D/tree" >>"$LOG" 2>&1 ||
        { echo "bench: $tg: cp -a tree differs through the mount!" >&2; exit 1; }
    fi
  fi
  timeout "$T" cat "$SRC" > /dev/null; settle
  t0=$(now)
  timeout "$T" dd if="$SRC" of="$D/big" bs=1M conv=fsync status=none
  add "write.$tg" "$(mbps "$FILE_BYTES" "$(since "$t0")")"
  [ "$(stat -c %s "$D/big")" = "$FILE_BYTES" ] || { echo "bench: $tg: written file has the wrong size" >&2; exit 1; }
  if drop_caches; then
    t0=$(now)
    timeout "$T" dd if="$D/big" of=/dev/null bs=1M status=none
    add "read.$tg" "$(mbps "$FILE_BYTES" "$(since "$t0")")"
  fi
  if [ "$r" = 1 ]; then
    timeout "$T" cmp "$SRC" "$D/big" || { echo "bench: $tg: read back different content!" >&2; exit 1; }
  fi
}

s3() {
  local r=$1 S=$WORK/s3store M=$WORK/mnt H=$WORK/host B=$WORK/bsrc BM=$WORK/bmnt
  # idle daemons: fresh store / empty dir, mount, ls the root, sleep 2
  rm -rf "$S"; timeout 60 "$V" init "$S" >>"$LOG" 2>&1
  mount_verfs "$S" "$M"; ls "$M" >/dev/null; sleep 2
  add idlehwm.verfs "$(hwm "$DPID" VmHWM)"; add idlerss.verfs "$(hwm "$DPID" VmRSS)"
  through verfs "$M" "$r"
  add hwm.verfs "$(hwm "$DPID" VmHWM)"
  umount_verfs; rm -rf "$S"
  if have bindfs; then
    rm -rf "$B"; mount_bindfs "$B" "$BM"; ls "$BM" >/dev/null; sleep 2
    add idlehwm.bindfs "$(hwm "$BPID" VmHWM)"; add idlerss.bindfs "$(hwm "$BPID" VmRSS)"
    through bindfs "$BM" "$r"
    add hwm.bindfs "$(hwm "$BPID" VmHWM)"
    umount_bindfs; rm -rf "$B"
  fi
  rm -rf "$H"; mkdir -p "$H"
  through host "$H" "$r"
  rm -rf "$H"
}

small() { # small TARGET DIR
  local out c s n u
  out=$(timeout "$T" python3 "$WORK/small.py" "$2/small" "$NFILES") || { echo "bench: $1: small-file phase failed" >&2; exit 1; }
  read -r c s n u <<<"$out"
  add "create.$1" "$c"; add "stat.$1" "$s"; add "rename.$1" "$n"; add "unlink.$1" "$u"
}
s4() {
  local S=$WORK/s4store M=$WORK/mnt H=$WORK/host B=$WORK/bsrc BM=$WORK/bmnt
  rm -rf "$S"; timeout 60 "$V" init "$S" >>"$LOG" 2>&1
  mount_verfs "$S" "$M"; small verfs "$M"; umount_verfs; rm -rf "$S"
  if have bindfs; then
    rm -rf "$B"; mount_bindfs "$B" "$BM"; small bindfs "$BM"; umount_bindfs; rm -rf "$B"
  fi
  rm -rf "$H"; mkdir -p "$H"; small host "$H"; rm -rf "$H"
}

s5() {
  local S=$WORK/s5store n k p bytes t0 secs
  for n in 1 2 4; do
    rm -rf "$S"; timeout 60 "$V" init "$S" >>"$LOG" 2>&1
    bytes=0
    for k in $(seq "$n"); do warm "$DATA/seed$k"; bytes=$((bytes + SEEDLOG[k])); done
    settle
    BGPIDS=()
    t0=$(now)
    for k in $(seq "$n"); do
      timeout "$T" "$V" -s "$S" put "$DATA/seed$k" "/t$k" </dev/null >>"$LOG" 2>&1 & BGPIDS+=($!)
    done
    for p in "${BGPIDS[@]}"; do wait "$p" || { echo "bench: a concurrent put failed" >&2; exit 1; }; done
    secs=$(since "$t0"); BGPIDS=()
    for k in $(seq "$n"); do
      timeout 60 "$V" -s "$S" ls / | grep -qx "t$k" || { echo "bench: /t$k missing after concurrent puts" >&2; exit 1; }
    done
    add "conc.$n" "$(mbps "$bytes" "$secs")"
    rm -rf "$S"
  done
}

# --- run -----------------------------------------------------------------------------------------
for r in $(seq "$RUNS"); do
  if want 1 || want 2; then say "run $r/$RUNS: sections 1-2 (put, peers)"; s1_2; fi
  if want 3; then say "run $r/$RUNS: section 3 (mount: cp, dd)"; s3 "$r"; fi
  if want 4; then say "run $r/$RUNS: section 4 (small files)"; s4; fi
  if want 5; then say "run $r/$RUNS: section 5 (concurrent puts)"; s5; fi
done

# --- report --------------------------------------------------------------------------------------
vals() { printf '%s\n' ${R[$1]:-}; }
med() { vals "$1" | median; }
ratio_med() { paste -d' ' <(vals "$1") <(vals "$2") | awk '$2 > 0 {printf "%.4f\n", $1/$2}' | median; }
fmt() { # fmt UNIT VALUE
  case "$1" in
    ops/s) awk -v v="$2" -v u="$1" 'BEGIN{printf "%.0f %s", v, u}' ;;
    x) awk -v v="$2" 'BEGIN{printf "%.3f", v}' ;;
    *) awk -v v="$2" -v u="$1" 'BEGIN{printf "%.1f %s", v, u}' ;;
  esac
}
line() { printf '| %-3s | %-40s | %-19s | %-22s | %-13s | %-7s |\n' "$@"; }
row() { # row SEC MEASURE VKEY UNIT [PEER PKEY]: printed when measured (and the peer was too)
  [ -n "${R[$3]:-}" ] || return 0
  if [ $# -lt 6 ]; then line "$1" "$2" "$(fmt "$4" "$(med "$3")")" - - -; return; fi
  [ -n "${R[$6]:-}" ] || return 0
  line "$1" "$2" "$(fmt "$4" "$(med "$3")")" "$5" "$(fmt "$4" "$(med "$6")")" "$(fmt x "$(ratio_med "$3" "$6")")x"
}
FS="$(df --output=fstype "$WORK" | tail -1 | tr -d ' ')"
echo "command: $CMDLINE"
echo "verfs compare: dataset $SIZE MiB${LOGICAL:+ ($LOGICAL bytes logical)}, runs $RUNS, $(nproc) cores, $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r), $FS under ${TMPDIR:-/tmp}; $VERSIONS"
echo "medians of $RUNS runs; ratio = median over runs of (verfs / peer) in the same run"
line sec measure verfs peer "peer value" ratio
line --- "$(printf '%.0s-' {1..40})" "$(printf '%.0s-' {1..19})" "$(printf '%.0s-' {1..22})" "$(printf '%.0s-' {1..13})" -------
if want 1; then
  row 1 "put, $SIZE MiB tree, fresh store" put.mbps MB/s
  row 1 "put peak RSS" put.rss MiB
  row 1 "stored (packs) / logical bytes" put.ratio x
  row 1 "incremental put after mutate" inc.mbps MB/s
  row 1 "incremental put peak RSS" inc.rss MiB
  row 1 "get, sha256 verified" get.mbps MB/s
  row 1 "get peak RSS" get.rss MiB
  if [ "$BIG" = 1 ]; then
    row 1 "put one 4 GiB file" big.mbps MB/s
    row 1 "put one 4 GiB file, peak RSS" big.rss MiB
  else
    line 1 "put one 4 GiB file, peak RSS" "skipped (use --big)" - - -
  fi
fi
if want 2; then
  for p in cp restic borg rustic; do
    case $p in cp) lab="cp -a + sync (host fs)" ;; restic) lab="restic backup" ;; borg) lab="borg create" ;; rustic) lab="rustic backup" ;; esac
    row 2 "ingest speed (verfs put)" put.mbps MB/s "$lab" $p.mbps
    row 2 "peak RSS" put.rss MiB "$lab" $p.rss
    row 2 "stored bytes (du -sb store / repo)" put.stored MB "$lab" $p.stored
  done
fi
if want 3; then
  row 3 "cp -a $SIZE MiB tree + sync" cp.verfs MB/s "bindfs" cp.bindfs
  row 3 "dd write ${FILE_MB} MiB conv=fsync" write.verfs MB/s "bindfs" write.bindfs
  row 3 "dd write ${FILE_MB} MiB conv=fsync" write.verfs MB/s "host dir ($FS)" write.host
  row 3 "dd read ${FILE_MB} MiB, cold cache" read.verfs MB/s "bindfs" read.bindfs
  row 3 "dd read ${FILE_MB} MiB, cold cache" read.verfs MB/s "host dir ($FS)" read.host
  row 3 "daemon peak RSS after the above" hwm.verfs MiB "bindfs" hwm.bindfs
  row 3 "idle mount daemon peak RSS (VmHWM)" idlehwm.verfs MiB "bindfs" idlehwm.bindfs
  row 3 "idle mount daemon RSS (VmRSS)" idlerss.verfs MiB "bindfs" idlerss.bindfs
  if ! have bindfs; then
    row 3 "idle mount daemon peak RSS (VmHWM)" idlehwm.verfs MiB
    row 3 "idle mount daemon RSS (VmRSS)" idlerss.verfs MiB
  fi
fi
if want 4; then
  for m in create stat rename unlink; do
    row 4 "$m $NFILES empty files" "$m.verfs" ops/s "bindfs" "$m.bindfs"
    row 4 "$m $NFILES empty files" "$m.verfs" ops/s "host dir ($FS)" "$m.host"
  done
fi
if want 5; then
  row 5 "1 put, aggregate ($QSIZE MiB tree)" conc.1 MB/s
  row 5 "2 concurrent puts, aggregate" conc.2 MB/s "1 put (ratio N/1)" conc.1
  row 5 "4 concurrent puts, aggregate" conc.4 MB/s "1 put (ratio N/1)" conc.1
fi
if want 3 && [ "$DROP_OK" != 1 ]; then
  note "skipped: cold reads (need root and a writable /proc/sys/vm/drop_caches)"
fi
for n in "${NOTES[@]}"; do echo "$n"; done
echo "all runs: $(for k in $(printf '%s\n' "${!R[@]}" | sort); do printf '%s[%s] ' "$k" "${R[$k]# }"; done)"
