#!/bin/bash
# Failover time of keepalived (VRRP) for issue 6's comparison with statesync: two keepalived in
# network namespaces of their own joined by a veth pair, VRRP version 3 with a 100 ms
# advertisement interval (statesync's heartbeat interval), unicast between the two. Each run
# kills every keepalived process of the master with SIGKILL and measures until the backup owns
# the virtual address: from the wall clock just before the kill to the time stamp of the address
# appearing in the backup's namespace (`ip -ts monitor address`, microseconds). The master is
# then started again and takes the address back (it has the higher priority) before the next
# run. keepalived holds no state: this is the time to move an address, nothing more.
# Prints one JSON object: every run's milliseconds, p50 and p99 (nearest rank).
# Needs root (ip netns). Cleans up its namespaces, processes and files, even when it fails.
#
#   bench/keepalived_failover.sh [--runs N]        (KEEP=1 keeps the logs)
set -euo pipefail
cd "$(dirname "$0")/.."

runs=20
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "keepalived_failover.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done
command -v keepalived >/dev/null || { echo "keepalived_failover.sh: keepalived is missing (scripts/setup installs it)" >&2; exit 1; }

P=ka$$
vip=10.77.0.100
dir=$(mktemp -d /tmp/statesync-keepalived-XXXXXX)
monitor=""
cleanup() {
  [ -n "$monitor" ] && kill "$monitor" 2>/dev/null || true
  for h in a b; do
    ip netns pids $P-$h 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
  done
  wait 2>/dev/null || true
  ip netns del $P-a 2>/dev/null || true
  ip netns del $P-b 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "keepalived_failover: kept $dir" >&2; else rm -rf "$dir"; fi
}
trap cleanup EXIT
log() { echo "keepalived_failover: $*" >&2; }

ip netns add $P-a
ip netns add $P-b
ip link add ${P}a type veth peer name ${P}b
ip link set ${P}a netns $P-a
ip link set ${P}b netns $P-b
ip -n $P-a addr add 10.77.0.1/24 dev ${P}a
ip -n $P-b addr add 10.77.0.2/24 dev ${P}b
for h in a b; do
  ip -n $P-$h link set lo up
  ip -n $P-$h link set ${P}$h up
done

for h in a b; do
  if [ $h = a ]; then state=MASTER priority=200 self=10.77.0.1 peer=10.77.0.2
  else state=BACKUP priority=100 self=10.77.0.2 peer=10.77.0.1; fi
  cat > "$dir/$h.conf" <<EOF
global_defs {
  vrrp_version 3
  script_user root
  enable_script_security
}
vrrp_instance bench {
  state $state
  interface ${P}$h
  virtual_router_id 77
  priority $priority
  advert_int 0.1
  unicast_src_ip $self
  unicast_peer {
    $peer
  }
  virtual_ipaddress {
    $vip/24
  }
}
EOF
done

start() {  # not a job of this shell: the kills would each print "Killed"
  (ip netns exec $P-$1 keepalived --dont-fork --vrrp --log-console --log-detail \
    --use-file "$dir/$1.conf" --pid "$dir/$1.pid" --vrrp_pid "$dir/$1.vrrp.pid" \
    >> "$dir/$1.log" 2>&1 &)
}
owns() { ip -n $P-$1 -o addr show | grep -q " $vip/"; }
wait_owner() {
  for _ in $(seq 1 400); do owns "$1" && return 0; sleep 0.025; done
  log "$1 did not take $vip; its log:"; tail -20 "$dir/$1.log" >&2; exit 1
}
now_us() { date +%s%6N; }

start a
start b
wait_owner a
sleep 1
times=""
for run in $(seq 1 "$runs"); do
  owns b && { log "b holds $vip before run $run"; exit 1; }
  ip -n $P-b -ts monitor address > "$dir/monitor.$run" &
  monitor=$!
  sleep 0.2
  t0=$(now_us)
  ip netns pids $P-a | xargs -r kill -KILL
  wait_owner b
  sleep 0.05
  kill "$monitor" 2>/dev/null || true
  wait "$monitor" 2>/dev/null || true
  monitor=""
  # "[2026-12-05T04:01:02.123456] 3: kab    inet 10.77.0.100/24 scope global secondary kab"
  seen=$(grep -m1 " $vip/" "$dir/monitor.$run" | sed -n 's/^\[\([^]]*\)\].*/\1/p')
  [ -n "$seen" ] || { log "no time stamp for $vip in run $run"; exit 1; }
  t1=$(date -d "$seen" +%s%6N)
  ms=$(( (t1 - t0 + 500) / 1000 ))
  times="$times $ms"
  log "run $run: b owns $vip after $ms ms"
  # As after a reboot: the dead master's address and pid files go (its killed processes may
  # linger as zombies here, which keepalived would take for a running daemon).
  ip -n $P-a addr del $vip/24 dev ${P}a 2>/dev/null || true
  rm -f "$dir"/a.pid "$dir"/a.vrrp.pid
  start a
  wait_owner a
  for _ in $(seq 1 200); do owns b || break; sleep 0.025; done
  owns b && { log "b kept $vip after a returned; logs in $dir"; exit 1; }
  sleep 0.5
done

python3 - "$runs" "$times" "$(keepalived --version 2>&1 | head -1)" <<'PY'
import json, math, sys
runs, values, version = int(sys.argv[1]), [int(v) for v in sys.argv[2].split()], sys.argv[3]
s = sorted(values)
rank = lambda q: s[max(0, math.ceil(q * len(s)) - 1)]
print(json.dumps({"keepalived": version, "advert_int_ms": 100, "runs": runs, "ms": values,
                  "p50": rank(0.5), "p99": rank(0.99), "max": s[-1]}))
PY
