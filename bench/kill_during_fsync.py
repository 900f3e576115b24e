#!/usr/bin/env python3
"""When does a peer see the connections of a killed process close?

A child connects to this process over TCP, writes MIB MiB into a file, and then (with `sync`)
fsyncs it from a second thread. The child is killed with SIGKILL 50 ms later. The kernel closes
a killed process's sockets only once its last thread has exited, so a thread inside a disk sync
holds the close back: what a statesync pair meets when its primary is killed while the store
syncs. Prints one JSON line per run: the milliseconds until the close was seen and until the
child was reaped.

    bench/kill_during_fsync.py [--dir DIR] [--mib N] [--runs N]
"""
import argparse
import json
import os
import signal
import socket
import threading
import time


def run(path, mib, sync):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        peer = socket.create_connection(listener.getsockname())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        chunk = b"x" * (1 << 20)
        for _ in range(mib):
            os.write(fd, chunk)
        if sync:
            threading.Thread(target=os.fsync, args=(fd,)).start()
        os.write(ready_w, b"1")
        time.sleep(60)
        os._exit(0)
    conn, _ = listener.accept()
    os.read(ready_r, 1)
    time.sleep(0.05)
    start = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    conn.recv(1)
    closed = time.monotonic()
    os.waitpid(pid, 0)
    reaped = time.monotonic()
    os.unlink(path)
    return {"mib": mib, "sync": sync, "close_seen_ms": round((closed - start) * 1000, 1),
            "reaped_ms": round((reaped - start) * 1000, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default="/tmp", help="a directory on the disk to test")
    parser.add_argument("--mib", type=int, default=1000, help="MiB written before the kill")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    path = os.path.join(args.dir, f"kill-during-fsync-{os.getpid()}")
    for _ in range(args.runs):
        for sync in (True, False):
            print(json.dumps(run(path, args.mib, sync)), flush=True)


if __name__ == "__main__":
    main()
