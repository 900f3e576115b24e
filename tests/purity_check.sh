#!/bin/bash
# The pure components (session table, failover core) must not touch the transport, the storage
# engine, threads or the clock: no such header may be included under sessiontable/ or failover/.
set -u
root=${1:?usage: purity_check.sh SOURCE_DIR}
bad=$(grep -rnE '#include\s*[<"](zmq|zmq\.hpp|zmq_addon\.hpp|rocksdb/[^">]*|thread|mutex|condition_variable|future|random)[">]' \
        "$root/sessiontable" "$root/failover" 2>/dev/null)
clock=$(grep -rnE '(system_clock|steady_clock|high_resolution_clock)::now|time\(nullptr\)|gettimeofday|clock_gettime' \
        "$root/sessiontable" "$root/failover" 2>/dev/null)
if [ -n "$bad$clock" ]; then
  echo "purity_check: pure components include or call what they must not:"
  [ -n "$bad" ] && echo "$bad"
  [ -n "$clock" ] && echo "$clock"
  exit 1
fi
echo "purity_check: sessiontable/ and failover/ include no ZeroMQ, RocksDB, thread or random header and read no clock"
