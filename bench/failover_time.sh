#!/bin/bash
# Failover time of a statesync pair holding SESSIONS firewall sessions, with the default
# heartbeat (100 ms x 3), each node in a network namespace of its own joined by three veth
# pairs (data, ha1, ha2), as in ../shared/NETNS.md.
#
#   bench/failover_time.sh [--runs N] [--sessions N] [--mode kill|silent|both] [--catch-up S]
#                          [--build DIR]
#
#   kill:    the primary's process is killed with SIGKILL (its connections close once it has
#            exited; the JSON's victim_exited_ms says when the shell reaped it);
#   silent:  every link of the primary is cut (`ip link set … down`): nothing closes, the
#            secondary hears the heartbeats stop;
#   --catch-up S: afterwards, the secondary is killed, the primary takes writes at 100k/s for S
#            seconds (updates of the same sessions), and the secondary's rejoin is timed.
#
# Each run measures from the fault (the wall clock just before it) to the time of the new
# primary's `ready` event in its HA event log (same clock, millisecond resolution). After a run
# the old primary is killed if it still runs, its links restored, and it is started again; it
# rejoins as secondary and catches up before the next run, so the roles alternate.
# Prints one JSON object: every run's milliseconds, p50 and p99 (nearest rank) per mode.
# Needs root (ip netns). Cleans up its namespaces, processes and files, even when it fails
# (KEEP=1 keeps the nodes' directories and logs).
set -euo pipefail
cd "$(dirname "$0")/.."

runs=20
sessions=1000000
mode=both
catch_up=0
build=build/release
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --sessions) sessions=$2; shift 2 ;;
    --mode) mode=$2; shift 2 ;;
    --catch-up) catch_up=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "failover_time.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done

ctl="$PWD/$build/tools/statesyncctl"
daemon="$PWD/$build/tools/statesyncd"
[ -x "$ctl" ] && [ -x "$daemon" ] || { echo "build first: cmake --build $build" >&2; exit 1; }

P=sf$$
dir=$(mktemp -d /tmp/statesync-failover-XXXXXX)
declare -A pid
cleanup() {
  for h in "${!pid[@]}"; do kill -KILL "${pid[$h]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del $P-a 2>/dev/null || true
  ip netns del $P-b 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "failover_time: kept $dir" >&2; else rm -rf "$dir"; fi
}
trap cleanup EXIT

log() { echo "failover_time: $*" >&2; }
now_ms() { date +%s%3N; }
other() { [ "$1" = a ] && echo b || echo a; }
addr() { local n=1; [ "$1" = b ] && n=2; echo "10.$2.0.$n"; }

ip netns add $P-a
ip netns add $P-b
for h in a b; do ip -n $P-$h link set lo up; done
subnet=78
for link in data ha1 ha2; do
  ip link add ${P}a$link type veth peer name ${P}b$link
  ip link set ${P}a$link netns $P-a
  ip link set ${P}b$link netns $P-b
  ip -n $P-a addr add 10.$subnet.0.1/24 dev ${P}a$link
  ip -n $P-b addr add 10.$subnet.0.2/24 dev ${P}b$link
  ip -n $P-a link set ${P}a$link up
  ip -n $P-b link set ${P}b$link up
  subnet=$((subnet + 1))
done

for h in a b; do
  {
    echo "[node]"
    echo "id = \"$h\""
    echo "data_dir = \"$dir/$h\""
    echo
    echo "[cluster]"
    echo "name = \"$P\""
    echo "links = [\"ha1\", \"ha2\"]"
    echo
    for m in a b; do
      role=secondary; [ $m = a ] && role=primary
      echo "[[member]]"
      echo "id = \"$m\""
      echo "role = \"$role\""
      echo "replication = \"tcp://$(addr $m 78):7400\""
      echo "heartbeat = [\"tcp://$(addr $m 79):7401\", \"tcp://$(addr $m 80):7402\"]"
      echo
    done
  } > "$dir/$h.toml"
done

start() {
  ip netns exec $P-$1 "$daemon" --config "$dir/$1.toml" >> "$dir/$1.log" 2>&1 &
  pid[$1]=$!
  for _ in $(seq 1 600); do
    "$ctl" --socket "$dir/$1/control.sock" status --json >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  log "node $1 did not start; its log:"; tail -20 "$dir/$1.log" >&2; exit 1
}
field() {  # field HOST PYTHON-EXPRESSION-ON-s
  "$ctl" --socket "$dir/$1/control.sock" status --json 2>/dev/null |
    python3 -c "import json,sys; s=json.load(sys.stdin); print($2)" 2>/dev/null || echo ""
}
wait_for() {  # wait_for SECONDS COMMAND...
  local limit=$1; shift
  local end=$(( $(now_ms) + limit * 1000 ))
  while [ "$(now_ms)" -lt $end ]; do "$@" && return 0; sleep 0.02; done
  return 1
}
is_ready() { [ "$(field "$1" "s['ready']")" = True ]; }
in_sync() {
  [ "$(field "$1" "s['effective_role']=='secondary' and s['sync']['state']=='in_sync' and s['sync']['lag_records']==0")" = True ]
}
ready_event_after() {  # HOST T0: the first `ready` event's time at or after T0, in ms
  "$ctl" --socket "$dir/$1/control.sock" events --json --last 200 |
    python3 -c "
import json, sys, datetime
t0 = int(sys.argv[1])
for line in sys.stdin:
    e = json.loads(line)
    if e.get('type') != 'ready': continue
    t = datetime.datetime.strptime(e['time'], '%Y-%m-%dT%H:%M:%S.%fZ').replace(tzinfo=datetime.timezone.utc)
    ms = int(t.timestamp() * 1000 + 0.5)
    if ms >= t0:
        print(ms); break
" "$2"
}
set_links() {  # HOST up|down
  for link in data ha1 ha2; do ip -n $P-$1 link set ${P}$1$link "$2"; done
}

start a
start b
wait_for 30 is_ready a || { log "a did not become primary"; exit 1; }
log "loading $sessions sessions into a"
"$ctl" --socket "$dir/a/control.sock" load --quiet --sessions "$sessions" --wait-acked > "$dir/load.json"
wait_for 120 in_sync b || { log "b did not catch up"; exit 1; }

declare -A times
exited=()
primary=a
modes=(kill silent)
[ "$mode" = kill ] && modes=(kill)
[ "$mode" = silent ] && modes=(silent)
for m in "${modes[@]}"; do
  times[$m]=""
  for run in $(seq 1 "$runs"); do
    secondary=$(other $primary)
    wait_for 120 in_sync $secondary || { log "$secondary not in sync before run $run"; exit 1; }
    sleep 0.3
    t0=$(now_ms)
    note=""
    if [ $m = kill ]; then
      kill -KILL "${pid[$primary]}"
      # The peer sees the connections close when the killed process has finished exiting
      # (its memory freed, any of its threads in a disk sync done): timed here, for reading.
      wait "${pid[$primary]}" 2>/dev/null || true
      exited+=($(( $(now_ms) - t0 )))
      note=" (the killed process exited after ${exited[-1]} ms)"
    else
      set_links $primary down
    fi
    wait_for 20 is_ready $secondary || { log "$secondary did not take over (run $run, $m)"; exit 1; }
    t=$(ready_event_after $secondary "$t0")
    ms=$((t - t0))
    times[$m]="${times[$m]} $ms"
    log "$m run $run: $secondary ready after $ms ms$note"
    # Bring the old primary back as a secondary.
    kill -KILL "${pid[$primary]}" 2>/dev/null || true
    wait "${pid[$primary]}" 2>/dev/null || true
    [ $m = silent ] && set_links $primary up
    start $primary
    primary=$secondary
  done
done

catch_json="null"
if [ "$catch_up" -gt 0 ]; then
  secondary=$(other $primary)
  wait_for 120 in_sync $secondary || { log "$secondary not in sync before the catch-up run"; exit 1; }
  kill -KILL "${pid[$secondary]}"; wait "${pid[$secondary]}" 2>/dev/null || true
  log "catch-up: $secondary down; $catch_up s of writes at 100000/s into $primary"
  "$ctl" --socket "$dir/$primary/control.sock" load --quiet --sessions $((catch_up * 100000)) \
    --rate 100000 --wait-acked > "$dir/catchup-load.json" || true
  behind=$(python3 -c "import json; print(json.load(open('$dir/catchup-load.json'))['records_acked'])")
  t0=$(now_ms)
  start $secondary
  t1=$(now_ms)
  wait_for 600 in_sync $secondary || { log "$secondary did not catch up"; exit 1; }
  t2=$(now_ms)
  catch_json="{\"down_s\": $catch_up, \"records_missed\": $behind, \"start_ms\": $((t1 - t0)), \"catch_up_ms\": $((t2 - t1)), \"records_per_second\": $(( behind * 1000 / (t2 - t1 > 0 ? t2 - t1 : 1) ))}"
  log "catch-up: $behind records in $((t2 - t1)) ms after the start ($((t1 - t0)) ms)"
fi

python3 - "$sessions" "$runs" "$catch_json" "${times[kill]:-}" "${times[silent]:-}" \
  "${exited[*]:-}" <<'EOF'
import json, math, sys
sessions, runs, catch = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
out = {"sessions": sessions, "runs": runs, "heartbeat": "100 ms x 3", "modes": {}}
for name, text in (("kill", sys.argv[4]), ("silent", sys.argv[5])):
    values = [int(v) for v in text.split()]
    if not values:
        continue
    s = sorted(values)
    rank = lambda q: s[max(0, math.ceil(q * len(s)) - 1)]
    out["modes"][name] = {"ms": values, "p50": rank(0.5), "p99": rank(0.99), "max": s[-1]}
if "kill" in out["modes"] and sys.argv[6].split():
    out["modes"]["kill"]["victim_exited_ms"] = [int(v) for v in sys.argv[6].split()]
out["catch_up"] = catch
print(json.dumps(out))
EOF
