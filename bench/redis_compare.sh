#!/bin/bash
# Redis master -> replica, with the records statesync replicates (issue 6): two redis-server
# processes on 127.0.0.1, started here in a scratch directory and stopped at the end (also on
# failure). Three cases, each repeated, with new servers every time:
#   replica_memory       the replica does not persist (no RDB, no AOF)
#   replica_aof_everysec the replica writes an append-only file, fsync every second
#   full_sync            an empty replica told REPLICAOF a master holding the records (Redis 7's
#                        default full sync, an RDB streamed from a fork of the master, without
#                        its default 5 s wait for more replicas: repl-diskless-sync-delay 0)
# Prints one JSON object: every run and the median of each case.
#
#   bench/redis_compare.sh [--records N] [--repetitions N] [--build DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

records=1000000
reps=3
build=build/release
while [ $# -gt 0 ]; do
  case "$1" in
    --records) records=$2; shift 2 ;;
    --repetitions) reps=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "redis_compare.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done
command -v redis-server >/dev/null || { echo "redis_compare.sh: redis-server is missing (scripts/setup installs it)" >&2; exit 1; }
tool=$build/bench/redis_compare
[ -x "$tool" ] || { echo "redis_compare.sh: $tool is not built" >&2; exit 1; }

dir=$(mktemp -d "${STATESYNC_BENCH_DIR:-/tmp}/statesync-redis-XXXXXX")
pids=()
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap 'stop_all; rm -rf "$dir"' EXIT
log() { echo "redis_compare: $*" >&2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# start NAME PORT [redis options...]: a server in $dir/NAME, in the foreground of a child.
start() {
  local name=$1 port=$2
  shift 2
  rm -rf "${dir:?}/$name"
  mkdir -p "$dir/$name"
  redis-server --bind 127.0.0.1 --port "$port" --dir "$dir/$name" --save "" --appendonly no \
    --protected-mode no --daemonize no --logfile "$dir/$name.log" "$@" &
  pids+=($!)
  for _ in $(seq 1 200); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  log "redis-server $name did not start (log: $dir/$name.log)"
  exit 1
}
link_up() { redis-cli -p "$1" info replication | grep -q 'master_link_status:up'; }
wait_link() {
  for _ in $(seq 1 400); do link_up "$1" && return 0; sleep 0.05; done
  log "the replica on port $1 did not connect"
  exit 1
}

declare -A runs
for rep in $(seq 1 "$reps"); do
  for mode in memory aof; do
    m=$(free_port); r=$(free_port)
    # No wait for more replicas before a full sync (Redis 7 waits 5 s by default).
    start master "$m" --repl-diskless-sync-delay 0
    if [ $mode = aof ]; then
      start replica "$r" --replicaof 127.0.0.1 "$m" --appendonly yes --appendfsync everysec
    else
      start replica "$r" --replicaof 127.0.0.1 "$m"
    fi
    wait_link "$r"
    out=$("$tool" replicate --master "$m" --replica "$r" --records "$records")
    log "replicate ($mode, run $rep): $out"
    runs[$mode]="${runs[$mode]:-} $out"
    if [ $mode = memory ]; then
      f=$(free_port)
      start fresh "$f"
      out=$("$tool" fullsync --master "$m" --replica "$f" --records "$records")
      log "full sync (run $rep): $out"
      runs[fullsync]="${runs[fullsync]:-} $out"
    fi
    stop_all
  done
done

python3 - "$records" "${runs[memory]}" "${runs[aof]}" "${runs[fullsync]}" \
  "$(redis-server --version)" <<'PY'
import json, statistics, sys
records, texts, version = int(sys.argv[1]), sys.argv[2:5], sys.argv[5]
def parse(text):
    dec, out, i = json.JSONDecoder(), [], 0
    text = text.strip()
    while i < len(text):
        obj, j = dec.raw_decode(text, i)
        out.append(obj)
        i = j
        while i < len(text) and text[i].isspace():
            i += 1
    return out
names = ("replica_memory", "replica_aof_everysec", "full_sync")
result = {"records": records, "redis": version.split()[2], "cases": {}}
for name, text in zip(names, texts):
    runs = parse(text)
    key = "full_sync_s" if name == "full_sync" else "replicated_s"
    result["cases"][name] = {
        "runs": runs,
        "median_records_per_s": statistics.median(r["records_per_s"] for r in runs),
        "median_s": statistics.median(r[key] for r in runs),
    }
print(json.dumps(result))
PY
