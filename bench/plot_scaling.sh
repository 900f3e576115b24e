#!/bin/bash
# Plots `replication_bench --case scaling`'s JSON: the end-to-end rate (left axis) and the
# primary's resident memory per session (right axis) against the number of sessions (log scale).
# Needs gnuplot (scripts/setup installs it).
#
#   bench/plot_scaling.sh SCALING.json OUT.png
set -euo pipefail
[ $# -eq 2 ] || { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
data=$(mktemp)
trap 'rm -f "$data"' EXIT
python3 - "$1" > "$data" <<'PY'
import json, sys
for p in json.load(open(sys.argv[1]))["scaling"]:
    print(f'{p["sessions"]:.0f} {p["records_per_s"] / 1000:.1f} {p["primary_bytes_per_session"]:.1f}')
PY
gnuplot <<GP
set terminal pngcairo size 800,500 font ",10"
set output "$2"
set title "statesync end to end as the session table grows (case (a), distinct upserts)"
set xlabel "sessions (log scale)"
set logscale x
set ylabel "k records/s"
set y2label "primary's resident bytes per session"
set ytics nomirror
set y2tics
set yrange [0:*]
set y2range [0:*]
set grid
set key top right
plot "$data" using 1:2 axes x1y1 with linespoints lw 2 title "records/s (k)", \
     "" using 1:3 axes x1y2 with linespoints lw 2 title "bytes per session"
GP
echo "plot_scaling: wrote $2"
