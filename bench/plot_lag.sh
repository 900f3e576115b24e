#!/bin/bash
# Plots delta lag against the write rate from `replication_bench --case lag-curve`'s JSON:
# p50, p99 and p99.9 in ms (log scale) at each rate. Needs gnuplot (scripts/setup installs it).
#
#   bench/plot_lag.sh LAG.json OUT.png
set -euo pipefail
[ $# -eq 2 ] || { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
data=$(mktemp)
trap 'rm -f "$data"' EXIT
python3 - "$1" > "$data" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
for p in doc["lag"]:
    print(f'{p["records_per_s"] / 1000:.1f} {p["p50_ms"]:.3f} {p["p99_ms"]:.3f} {p["p999_ms"]:.3f} {p["fraction"] * 100:.0f}')
PY
max=$(python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['max_records_per_s'] / 1000))" "$1")
gnuplot <<GP
set terminal pngcairo size 800,500 font ",10"
set output "$2"
set title "statesync delta lag (write -> subordinate's durable commit -> ack), sync mode; sustained max ${max}k records/s"
set xlabel "write rate asked, as a % of the sustained sync-mode maximum (achieved k records/s)"
set ylabel "lag (ms, log scale)"
set logscale y
set grid
set bmargin 5
set key top left
plot "$data" using 5:2:xtic(sprintf("%d%%\\n%.0fk/s", \$5, \$1)) with linespoints lw 2 title "p50", \
     "" using 5:3 with linespoints lw 2 title "p99", \
     "" using 5:4 with linespoints lw 2 title "p99.9"
GP
echo "plot_lag: wrote $2"
