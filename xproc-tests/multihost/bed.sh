#!/usr/bin/env bash
# bed.sh: the verfs two-host test bed. One GlusterFS volume served from the root network
# namespace, FUSE-mounted by two clients that each live in their own network namespace behind
# their own veth link: two "hosts" that share one POSIX filesystem and whose links can be cut.
# Measured semantics of such a bed: ../shared/multihost/README.md (issue 14).
#
#   bed.sh up        install glusterfs if missing, then bring the bed up (prints the two mounts)
#   bed.sh down      tear down whatever a bed left (idempotent; also after a failed or killed up)
#   bed.sh cut N     partition host N: its veth goes down (its gluster mount blocks, then ENOTCONN)
#   bed.sh heal N    bring host N's link back
#   bed.sh status    what is up
#
# Layout, under the base dir $VERFS_BED (default ${TMPDIR:-/tmp}/verfs-bed):
#   brick/           the volume's only brick (served by glusterfsd in the root netns)
#   h1/ h2/          the two client mounts, visible to every process: run "host N" processes
#                    against hN (store at hN/STORE); client traffic of hN goes over vfs-hN
#   h1.pid h2.pid    the FUSE client daemons; glusterd.pid, *.log: the server's and clients'
# Names of its own, so it never meets the reference recipe (gluster-2host.sh): netns vfs-h1 and
# vfs-h2, bridge vfsbr0 with 10.201.0.1/24 (hosts .11 and .12, addresses nowhere else), volume
# vfsv. glusterd's port (24007) and state dir (/var/lib/glusterd) are per machine, so there is
# ONE bed per machine: `up` refuses (exit 3) while a glusterd it did not start runs, and
# /run/verfs-bed.base names the base dir of the bed that is up, so `down` from any base (or a
# new `up`) removes a bed whose owner died.
#
# Steps of `up`, and what each is for:
#  1. root + glusterfs-server/-client (apt-get when missing), iproute2, util-linux (nsenter).
#  2. A stale bed (pointer file, netns, bridge, volume left by a killed run) is torn down first;
#     a failing `up` tears down what it made (trap), so `up` after a failed `up` works.
#  3. Network: bridge vfsbr0 (the server's address) and one veth per host, its inner end in the
#     host's netns: `cut N` takes the outer end down, a real partition of that client only.
#  4. glusterd without systemd (pid file and log under the base dir).
#  5. Volume vfsv on 10.201.0.1:BASE/brick (glusterd refuses loopback bricks) with the client
#     caching translators off (stat-prefetch, quick-read, open-behind, write-behind, read-ahead,
#     io-cache, readdir-ahead, nl-cache): with them on, an overwrite reads old for ~1 s or for
#     ever, appends show 0.5-1 s late, and read-modify-write under fcntl locks loses updates.
#     5 s ping/TCP timeouts and fast keepalives: a partitioned client loses its locks after ~4 s
#     instead of ~40 s; client.strict-locks on: after a heal, its descriptors that held locks
#     get EBADFD instead of writing into files that others now own.
#  6. Mounts: `nsenter --net` (not `ip netns exec`, which also unshares the mount namespace and
#     would hide the mount) runs each FUSE client daemon in its host's netns; --attribute-timeout
#     =0 --entry-timeout=0 --negative-timeout=0 (no stale attributes or dentries across hosts),
#     --fopen-keep-cache=off (else a same-size overwrite reads old for ever; the mount.glusterfs
#     wrapper mangles this option, hence the glusterfs binary), --direct-io-mode=enable.
#  7. A probe: a file written through h1 must read back whole through h2.
set -euo pipefail

BASE=${VERFS_BED:-${TMPDIR:-/tmp}/verfs-bed}
VOL=vfsv
NET=10.201.0
SRV=$NET.1
BR=vfsbr0
NS=(vfs-h1 vfs-h2)
TIMEOUT=5 # seconds: ping and TCP user timeouts (a partitioned client loses its locks in ~4 s)
POINTER=/run/verfs-bed.base
G=(gluster --mode=script)

log() { echo "[verfs-bed $(date +%T.%3N)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Is something mounted at $1? From /proc/self/mountinfo, not stat: a cut or killed client's
# mount answers ENOTCONN, and `mountpoint` would call it unmounted. (Paths with spaces or other
# characters mountinfo escapes are not supported.)
mounted() { awk -v m="$1" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo; }

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# Wait up to $2 tenths of a second for pid $1 to exit; true if it did.
wait_gone() {
  local i
  for ((i = 0; i < $2; i++)); do alive "$1" || return 0; sleep 0.1; done
  ! alive "$1"
}

# Kill pid $1 (read from a pid file of ours) if its command line contains $2: a pid file can
# outlive its process and name a reused pid.
kill_ours() {
  local pid=$1 want=$2
  alive "$pid" || return 0
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$want" || return 0
  kill "$pid" 2>/dev/null || true
  wait_gone "$pid" 50 || { kill -9 "$pid" 2>/dev/null || true; wait_gone "$pid" 20 || true; }
}

# The glusterd we started for base $1, if it runs.
our_glusterd() {
  local f=$1/glusterd.pid p
  [ -f "$f" ] || return 1
  p=$(cat "$f" 2>/dev/null) || return 1
  alive "$p" && tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q glusterd && echo "$p"
}

# Pids of every running glusterd (by /proc, read only).
all_glusterd() {
  local d
  for d in /proc/[0-9]*; do
    [ "$(cat "$d/comm" 2>/dev/null)" = glusterd ] && echo "${d#/proc/}"
  done
  return 0
}

install_if_missing() {
  local need=()
  command -v glusterd >/dev/null 2>&1 || need+=(glusterfs-server)
  command -v glusterfs >/dev/null 2>&1 || need+=(glusterfs-client)
  command -v ip >/dev/null 2>&1 || need+=(iproute2)
  command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
  [ ${#need[@]} -eq 0 ] && return 0
  log "installing ${need[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
}

# Tear down the bed of base $1 (any part of it may be missing).
teardown_base() {
  local b=$1 i p
  for i in 1 2; do
    ip link set "vfs-h$i-br" up 2>/dev/null || true # a cut client cannot finish its unmount
    if mounted "$b/h$i"; then
      umount "$b/h$i" 2>/dev/null || umount -l "$b/h$i" 2>/dev/null || log "cannot unmount $b/h$i"
    fi
  done
  for i in 1 2; do # the client daemon keeps its netns alive until it exits
    if [ -f "$b/h$i.pid" ]; then
      p=$(cat "$b/h$i.pid" 2>/dev/null || true)
      if alive "$p" && ! wait_gone "$p" 50; then kill_ours "$p" "volfile-id=$VOL"; fi
      rm -f "$b/h$i.pid"
    fi
  done
  if p=$(our_glusterd "$b"); then
    if "${G[@]}" volume info "$VOL" >/dev/null 2>&1; then
      "${G[@]}" volume stop "$VOL" force >/dev/null 2>&1 || true
      "${G[@]}" volume delete "$VOL" >/dev/null 2>&1 || true
    fi
    kill_ours "$p" glusterd
  fi
  rm -f "$b/glusterd.pid"
}

# Brick processes of our volume left by a glusterd that died without stopping it.
kill_stray_bricks() {
  local f p
  for f in /var/run/gluster/vols/$VOL/*.pid /run/gluster/vols/$VOL/*.pid; do
    [ -f "$f" ] || continue
    p=$(cat "$f" 2>/dev/null || true)
    kill_ours "$p" "$VOL"
    rm -f "$f"
  done
}

down() {
  set +e
  local bases=("$BASE") other
  if [ -f "$POINTER" ]; then
    other=$(cat "$POINTER" 2>/dev/null)
    [ -n "$other" ] && [ "$other" != "$BASE" ] && bases+=("$other")
  fi
  for b in "${bases[@]}"; do teardown_base "$b"; done
  kill_stray_bricks
  for n in "${NS[@]}"; do ip netns del "$n" 2>/dev/null; done
  for i in 1 2; do ip link del "vfs-h$i-br" 2>/dev/null; done
  ip link del "$BR" 2>/dev/null
  for b in "${bases[@]}"; do
    # Never rm -rf through a mount: a gluster mount still attached would lose the volume's
    # files, anything else mounted below would lose its own.
    if [ -d "$b" ] && awk -v b="$b/" 'index($5 "/", b) == 1 { f = 1 } END { exit !f }' /proc/self/mountinfo; then
      log "something is still mounted under $b: not removing it"
    else
      rm -rf "$b"
    fi
  done
  rm -f "$POINTER"
  log "down"
  return 0
}

stale_state() {
  [ -f "$POINTER" ] || ip netns list 2>/dev/null | grep -qE '^vfs-h[12]( |$)' \
    || ip link show "$BR" >/dev/null 2>&1
}

up() {
  [ "$(id -u)" = 0 ] || { log "needs root (network namespaces, glusterd, FUSE mounts)"; exit 3; }
  install_if_missing
  command -v glusterd >/dev/null 2>&1 || die "glusterd not found after installing glusterfs-server"
  if stale_state; then
    log "removing a stale bed ($(cat "$POINTER" 2>/dev/null || echo "netns/bridge left"))"
    down
  fi
  local ours="" p foreign=()
  ours=$(our_glusterd "$BASE" || true)
  for p in $(all_glusterd); do [ "$p" = "$ours" ] || foreign+=("$p"); done
  if [ ${#foreign[@]} -gt 0 ]; then
    log "another glusterd runs (pid ${foreign[*]}; the reference recipe? gluster-2host.sh down):"
    log "glusterd's port 24007 and /var/lib/glusterd are per machine, so the bed cannot come up"
    exit 3
  fi

  UP_DONE=""
  trap 'rc=$?; if [ -z "$UP_DONE" ]; then log "up failed (exit $rc): tearing down what it made"; down; fi; exit $rc' EXIT
  mkdir -p "$BASE/brick" "$BASE/h1" "$BASE/h2"
  echo "$BASE" >"$POINTER"

  log "network: bridge $BR $SRV/24, netns ${NS[*]} ($NET.11, $NET.12)"
  ip link add "$BR" type bridge
  ip addr add "$SRV/24" dev "$BR"
  ip link set "$BR" up
  for i in 1 2; do
    ip netns add "vfs-h$i"
    ip link add "vfs-h$i-br" type veth peer name "vfs-h$i-if"
    ip link set "vfs-h$i-if" netns "vfs-h$i"
    ip link set "vfs-h$i-br" master "$BR" up
    ip -n "vfs-h$i" addr add "$NET.1$i/24" dev "vfs-h$i-if"
    ip -n "vfs-h$i" link set "vfs-h$i-if" up
    ip -n "vfs-h$i" link set lo up
  done

  log "glusterd (no systemd)"
  /usr/sbin/glusterd -p "$BASE/glusterd.pid" --log-file="$BASE/glusterd.log"
  local ok=""
  for _ in $(seq 150); do "${G[@]}" volume list >/dev/null 2>&1 && { ok=1; break; }; sleep 0.1; done
  [ -n "$ok" ] || die "glusterd did not answer within 15 s (log: $BASE/glusterd.log)"
  if "${G[@]}" volume info "$VOL" >/dev/null 2>&1; then # left in /var/lib/glusterd by a killed run
    log "deleting a stale volume $VOL"
    "${G[@]}" volume stop "$VOL" force >/dev/null 2>&1 || true
    "${G[@]}" volume delete "$VOL" >/dev/null
  fi

  log "volume $VOL on $SRV:$BASE/brick (strict: caching translators off, ${TIMEOUT}s timeouts, strict-locks)"
  "${G[@]}" volume create "$VOL" "$SRV:$BASE/brick" force >/dev/null
  local o kv
  for o in stat-prefetch quick-read open-behind write-behind read-ahead io-cache readdir-ahead nl-cache; do
    "${G[@]}" volume set "$VOL" "performance.$o" off >/dev/null
  done
  for kv in network.ping-timeout=$TIMEOUT server.tcp-user-timeout=$TIMEOUT client.tcp-user-timeout=$TIMEOUT \
    server.keepalive-time=2 server.keepalive-interval=1 server.keepalive-count=3 \
    client.keepalive-time=2 client.keepalive-interval=1 client.keepalive-count=3 \
    client.strict-locks=on; do
    "${G[@]}" volume set "$VOL" "${kv%%=*}" "${kv#*=}" >/dev/null
  done
  "${G[@]}" volume start "$VOL" >/dev/null

  log "mounting h1, h2 (client daemons in their netns, mounts in the root mount namespace)"
  for i in 1 2; do
    nsenter --net="/run/netns/vfs-h$i" /usr/sbin/glusterfs --process-name fuse \
      --volfile-server="$SRV" --volfile-id="$VOL" --pid-file="$BASE/h$i.pid" \
      --attribute-timeout=0 --entry-timeout=0 --negative-timeout=0 \
      --fopen-keep-cache=off --direct-io-mode=enable \
      --log-file="$BASE/h$i.log" "$BASE/h$i"
  done
  for i in 1 2; do
    for _ in $(seq 150); do mounted "$BASE/h$i" && stat "$BASE/h$i/." >/dev/null 2>&1 && break; sleep 0.1; done
    mounted "$BASE/h$i" && stat "$BASE/h$i/." >/dev/null 2>&1 || die "mount h$i did not come up (log: $BASE/h$i.log)"
  done

  local probe=".bed-probe-$$"
  echo "probe $$" >"$BASE/h1/$probe"
  [ "$(cat "$BASE/h2/$probe")" = "probe $$" ] || die "a file written through h1 does not read back through h2"
  rm -f "$BASE/h2/$probe"
  UP_DONE=1
  log "up: $BASE/h1 $BASE/h2"
  echo "$BASE/h1"
  echo "$BASE/h2"
}

host_arg() {
  case "${1:-}" in
    1 | 2) ;;
    *) echo "usage: $0 cut|heal 1|2" >&2; exit 2 ;;
  esac
  ip link show "vfs-h$1-br" >/dev/null 2>&1 || die "the bed is not up (no link vfs-h$1-br)"
}

do_cut() { host_arg "${1:-}"; ip link set "vfs-h$1-br" down; log "cut h$1"; }
do_heal() { host_arg "${1:-}"; ip link set "vfs-h$1-br" up; log "healed h$1"; }

status() {
  local b=$BASE i p
  [ -f "$POINTER" ] && b=$(cat "$POINTER")
  echo "base: $b$([ -f "$POINTER" ] || echo " (no bed is up)")"
  p=$(our_glusterd "$b" || true)
  echo "glusterd: ${p:-not running}"
  [ -n "$p" ] && "${G[@]}" volume status "$VOL" 2>/dev/null | sed -n '/^Brick/p'
  for i in 1 2; do
    local m=no l=absent
    mounted "$b/h$i" && m=yes
    if ip link show "vfs-h$i-br" >/dev/null 2>&1; then
      if ip -o link show "vfs-h$i-br" | grep -q '[<,]UP[,>]'; then l=up; else l=cut; fi
    fi
    echo "h$i: mounted $m at $b/h$i, link $l, client pid $(cat "$b/h$i.pid" 2>/dev/null || echo -)"
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  cut) do_cut "${2:-}" ;;
  heal) do_heal "${2:-}" ;;
  status) status ;;
  *) echo "usage: $0 up|down|cut N|heal N|status" >&2; exit 2 ;;
esac
