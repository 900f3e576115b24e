#!/bin/bash
# Plots the JSON of the issue-6 benchmarks as PNG files. Needs gnuplot and python3 (scripts/setup
# installs both).
#
#   bench/plot.sh lag      LAG.json      OUT.png   lag p50/p99/p99.9 against the write rate
#                                                  (replication_bench --case lag-curve)
#   bench/plot.sh scaling  SCALING.json  OUT.png   rate and memory per session against the
#                                                  table's size (replication_bench --case scaling)
#   bench/plot.sh fan-out  FANOUT.json   OUT.png   rate against the number of subordinates
#                                                  (replication_bench --case fan-out)
#   bench/plot.sh rejoin   REJOIN.json   OUT.png   catch-up time against the records missed
#                                                  (replication_bench --case rejoin)
#   bench/plot.sh compare  DATE.json     OUT.png   the limits, Redis and keepalived side by side
#                                                  (scripts/bench compare's merged JSON)
set -euo pipefail
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }
[ $# -eq 3 ] || usage
kind=$1 json=$2 png=$3
data=$(mktemp)
trap 'rm -f "$data"' EXIT

# The data rows for gnuplot, from the JSON: one Python expression per kind.
python3 - "$kind" "$json" > "$data" <<'PY'
import json, sys
kind, doc = sys.argv[1], json.load(open(sys.argv[2]))
rows = []
if kind == "lag":
    for p in doc["lag"]:
        rows.append(f'{p["fraction"] * 100:.0f} {p["records_per_s"] / 1000:.1f} '
                    f'{p["p50_ms"]:.3f} {p["p99_ms"]:.3f} {p["p999_ms"]:.3f}')
elif kind == "scaling":
    at = {p["sessions"]: p["deltas_per_s"] for p in doc.get("at_size", [])}
    for p in doc["scaling"]:
        grown_mb = p["primary_bytes_per_session"] * p["sessions"] / 1e6
        rows.append(f'{p["sessions"]:.0f} {p["records_per_s"] / 1000:.1f} '
                    f'{grown_mb:.1f} {at.get(p["sessions"], float("nan")) / 1000:.1f}')
elif kind == "fan-out":
    for p in doc["fan_out"]:
        rows.append(f'{p["subordinates"]:.0f} {p["records_per_s"] / 1000:.1f}')
elif kind == "rejoin":
    for p in doc["rejoin"]:
        rows.append(f'{p["missed"]:.0f} {p["catch_up_s"]:.3f} {p["restart_s"]:.3f}')
elif kind == "compare":
    lim, red, ka = doc["limits"], doc["versus_redis"], doc["versus_keepalived"]
    rows += [f'"ZeroMQ alone" {lim["zmq_push_pull_records_per_s"] / 1000:.0f}',
             f'"RocksDB alone" {lim["rocksdb_write_batch_records_per_s"] / 1000:.0f}',
             f'"naive pipeline" {lim["naive_pipeline_records_per_s"] / 1000:.0f}',
             f'"statesync" {lim["statesync_records_per_s"] / 1000:.0f}', "", "",
             f'"statesync" {red["statesync_end_to_end_records_per_s"]["median"] / 1000:.0f}',
             *([f'"statesync via a node" {red["statesync_node_ingest_records_per_s"]["median_records_per_s"] / 1000:.0f}']
               if "statesync_node_ingest_records_per_s" in red else []),
             f'"Redis replica" {red["redis_replica_memory_records_per_s"] / 1000:.0f}',
             f'"Redis replica, AOF" {red["redis_replica_aof_everysec_records_per_s"] / 1000:.0f}',
             "", "",
             f'"statesync SNAPSHOT" {red["statesync_snapshot_catch_up_s"]["median"]:.2f}',
             f'"Redis full sync" {red["redis_full_sync_s"]:.2f}', "", "",
             ]
    if "skipped" in ka:  # no network namespaces where it ran: an empty panel that says so
        rows += ['"statesync (not run)" 0 0', '"keepalived (not run)" 0 0']
    else:
        rows += [f'"statesync" {ka["p50_ms"]["statesync"]:.0f} {ka["p99_ms"]["statesync"]:.0f}',
                 f'"keepalived" {ka["p50_ms"]["keepalived"]:.0f} {ka["p99_ms"]["keepalived"]:.0f}']
else:
    sys.exit(f"bench/plot.sh: unknown kind '{kind}'")
print("\n".join(rows))
PY

# A field of the JSON, for a title.
field() { python3 -c 'import json, sys; print(eval(sys.argv[2], {}, json.load(open(sys.argv[1]))))' "$json" "$1"; }
case "$kind" in
  lag)
    max=$(field 'round(max_records_per_s / 1000)')
    body=$(cat <<GP
set title "statesync delta lag (write -> subordinate's durable commit -> ack), sync mode; sustained max ${max}k records/s"
set xlabel "write rate asked, as a % of the sustained sync-mode maximum (achieved k records/s)" offset 0,-1
set ylabel "lag (ms, log scale)"
set logscale y
set bmargin 6
set xrange [0:100]
set key top left
plot "$data" using 1:3:xtic(sprintf("%d%%\\n%.0fk/s", \$1, \$2)) with linespoints lw 2 title "p50", \
     "" using 1:4 with linespoints lw 2 title "p99", \
     "" using 1:5 with linespoints lw 2 title "p99.9"
GP
)
    ;;
  scaling)
    body=$(cat <<GP
set title "statesync end to end as the session table grows"
set xlabel "sessions (log scale)"
set logscale x
set ylabel "k records/s"
set y2label "primary's resident memory grown (MB, log scale)"
set ytics nomirror
set y2tics
set logscale y2
set yrange [0:*]
set key bottom right
plot "$data" using 1:2 axes x1y1 with linespoints lw 2 title "filling the table from empty (k records/s)", \
     "" using 1:4 axes x1y1 with linespoints lw 2 title "1M updates at this size (k deltas/s)", \
     "" using 1:3 axes x1y2 with linespoints lw 2 dt 2 title "memory grown (MB, right axis; linear = slope 1)", \
     "" using 1:3:(sprintf("%.0f MB", \$3)) axes x1y2 with labels offset 0,1 notitle
GP
)
    ;;
  fan-out)
    records=$(field 'f"{records / 1e6:g}M"')
    body=$(cat <<GP
set title "statesync end to end with 1, 2 and 3 subordinates (until all persisted; ${records} sessions)"
set xlabel "subordinates"
set xtics 1
set xrange [0.5:3.5]
set ylabel "k records/s"
set yrange [0:*]
set offsets 0, 0, graph 0.1, 0
set key off
plot "$data" using 1:2 with linespoints lw 2, "" using 1:2:(sprintf("%.0fk", \$2)) with labels offset 0,1
GP
)
    ;;
  rejoin)
    base=$(field 'f"{base_sessions / 1e6:g}M"')
    body=$(cat <<GP
set title "a subordinate (${base} sessions) rejoins after missing N new ones: CONTINUE from the journal"
set xlabel "records missed (log scale)"
set logscale xy
set ylabel "seconds from its restart (log scale)"
set key top left
plot "$data" using 1:2 with linespoints lw 2 title "caught up", \
     "" using 1:3 with linespoints lw 2 title "started (store opened, tables loaded)"
GP
)
    ;;
  compare)
    failover_title="failover after SIGKILL, 100 ms adverts/heartbeats (20 runs)"
    skipped=$(field 'versus_keepalived.get("skipped", "")')
    [ -z "$skipped" ] || failover_title="failover: not run ($skipped)"
    body=$(cat <<GP
set multiplot layout 2,2 title "statesync and the alternatives, one run on one machine"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set offsets 0, 0, graph 0.1, 0
set xtics rotate by -20 scale 0
set yrange [0:*]
set key off
set title "the machine's limits (1M records)"
set ylabel "k records/s (log scale)"
set logscale y
set yrange [10:*]
plot "$data" index 0 using 2:xtic(1), "" index 0 using 0:2:(sprintf("%.0fk", \$2)) with labels offset 0,0.7
unset logscale y
set yrange [0:*]
set title "replicated, master -> replica (1M records)"
set ylabel "k records/s"
plot "$data" index 1 using 2:xtic(1), "" index 1 using 0:2:(sprintf("%.0fk", \$2)) with labels offset 0,0.7
set title "full catch-up of 1M records"
set ylabel "seconds"
plot "$data" index 2 using 2:xtic(1), "" index 2 using 0:2:(sprintf("%.2f s", \$2)) with labels offset 0,0.7
set title "$failover_title"
set ylabel "ms"
set key top left
plot "$data" index 3 using 2:xtic(1) title "p50", "" index 3 using 3 title "p99"
unset multiplot
GP
)
    ;;
esac
size="800,500"
[ "$kind" = compare ] && size="1100,800"
gnuplot <<GP
set terminal pngcairo size $size font ",10"
set output "$png"
set grid
$body
GP
echo "bench/plot.sh $kind: wrote $png"
