#!/bin/bash
# How long a 4 KiB in-place write of the HA state takes to become durable (fdatasync, or
# O_DIRECT|O_DSYNC) while another file's large fsync is running on the same disk: what a
# promotion's epoch save meets right after a bulk load (RocksDB syncing its flushes and
# compactions). Prints one JSON line per mode: the sync times in ms.
#
#   bench/ha_state_sync.sh [DIR] [GIB]     DIR: a directory on the disk to test (default: /tmp)
set -euo pipefail
dir=${1:-/tmp}
gib=${2:-1.5}
work=$(mktemp -d "$dir/ha-sync-XXXXXX")
trap 'rm -rf "$work"' EXIT
dd if=/dev/zero of="$work/slot" bs=4096 count=2 status=none
sync "$work/slot"
mib=$(awk -v g="$gib" 'BEGIN { printf "%d", g * 1024 }')
for mode in fdatasync direct; do
  flags=fdatasync
  [ "$mode" = direct ] && flags=""
  dd if=/dev/urandom of="$work/big" bs=1M count="$mib" status=none   # dirty, not yet written
  sync "$work/big" &                                                  # the large fsync
  fsync_pid=$!
  times=()
  while kill -0 "$fsync_pid" 2>/dev/null; do
    start=$(date +%s%N)
    if [ "$mode" = direct ]; then
      dd if=/dev/urandom of="$work/slot" bs=4096 count=1 conv=notrunc oflag=direct,dsync status=none
    else
      dd if=/dev/urandom of="$work/slot" bs=4096 count=1 conv=notrunc,$flags status=none
    fi
    times+=($(( ($(date +%s%N) - start) / 1000000 )))
    sleep 0.02
  done
  wait "$fsync_pid"
  rm -f "$work/big"
  sorted=$(printf '%s\n' "${times[@]}" | sort -n | paste -sd, -)
  echo "{\"mode\":\"$mode\",\"bulk_gib\":$gib,\"sync_ms\":[${sorted}]}"
done
