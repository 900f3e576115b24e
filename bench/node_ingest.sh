#!/bin/bash
# statesync through its node, the way Redis is driven in bench/redis_compare.sh: a client in a
# process of its own writes N firewall sessions into the primary, and the time runs until the
# secondary has persisted them. Here two statesyncd on 127.0.0.1 (`statesyncctl cluster up`, sync
# mode: a write is acknowledged once the secondary persisted it) and `statesyncctl load
# --wait-acked` through the primary's ingest socket (500 records a request, 32 requests in
# flight). A new cluster for each run. Prints JSON: each run's records/s and the median.
#
#   bench/node_ingest.sh [--records N] [--repetitions R]   (defaults: 1000000, 3)
set -euo pipefail
cd "$(dirname "$0")/.."
records=1000000
reps=3
while [ $# -gt 0 ]; do
  case "$1" in
    --records) records=${2:?--records needs a number}; shift ;;
    --repetitions) reps=${2:?--repetitions needs a number}; shift ;;
    *) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2 ;;
  esac
  shift
done
ctl=build/release/tools/statesyncctl
[ -x "$ctl" ] || { echo "bench/node_ingest.sh: build statesyncd and statesyncctl first" >&2; exit 1; }

dir=""
cleanup() {
  if [ -n "$dir" ]; then
    "$ctl" cluster down --dir "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir"
  fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM  # the EXIT trap then stops the cluster

status_is() {  # NODE PYTHON-CONDITION-ON-s
  "$ctl" --socket "$dir/$1/control.sock" status --json 2>/dev/null |
    python3 -c "import json, sys; s = json.load(sys.stdin); sys.exit(0 if ($2) else 1)" 2>/dev/null
}
wait_until() {  # SECONDS NODE CONDITION
  local deadline=$((SECONDS + $1))
  until status_is "$2" "$3"; do
    if [ $SECONDS -ge $deadline ]; then
      echo "bench/node_ingest.sh: $2 never got to: $3; the ends of the nodes' logs:" >&2
      tail -n 15 "$dir"/n*/statesyncd.log >&2 || true
      exit 1
    fi
    sleep 0.1
  done
}

rates=()
for run in $(seq 1 "$reps"); do
  dir=$(mktemp -d /tmp/statesync-bench-ingest-XXXXXX)
  "$ctl" cluster up --nodes 2 --sync-mode sync --dir "$dir" --base-port 7640 >/dev/null
  # Generous: right after the other benchmarks the disk may still be writing back (and
  # discarding) gigabytes, and a node's start syncs its files.
  started=$SECONDS
  wait_until 120 n1 "s['ready']"
  wait_until 120 n2 "s['effective_role'] == 'secondary' and s['sync']['state'] == 'in_sync'"
  echo "node_ingest: run $run: the pair was ready and in sync after $((SECONDS - started)) s" >&2
  summary=$("$ctl" --socket "$dir/n1/control.sock" load --quiet --sessions "$records" --wait-acked)
  rate=$(python3 -c '
import json, sys
s = json.loads(sys.argv[1])
if s["records_acked"] != int(sys.argv[2]):
    sys.exit("bench/node_ingest.sh: %d of %s records acknowledged" % (s["records_acked"], sys.argv[2]))
print(round(s["records_per_second"]))' "$summary" "$records")
  echo "node_ingest: run $run: $rate records/s" >&2
  rates+=("$rate")
  cleanup
  dir=""
done
python3 -c '
import json, statistics, sys
rates = [int(r) for r in sys.argv[2:]]
print(json.dumps({"records": int(sys.argv[1]), "runs": rates, "median_records_per_s": statistics.median(rates)}))
' "$records" "${rates[@]}"
