#!/usr/bin/python3
"""First `print(1)` execute of new sessions of a micro-VM pool (the session takes a ready sandbox;
its first cell pays the copy-on-write faults of the cell path that the clone has not written yet),
then a second one. One `sandpool serve`, pool `vm` (isolation microvm, 2 ready); each session is
deleted and the pool refills before the next. Usage: first_execute.py BUILD_DIR [--n 20]
[--agent-dir DIR] (another agent under the same binary, for A/B).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pool_execute as pe  # noqa: E402  (Client, the server's start)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--agent-dir", default="")
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="sp-vmfirst-")
    port_file, pools = os.path.join(d, "port"), os.path.join(d, "pools.json")
    with open(pools, "w") as f:
        json.dump({"pools": [{"name": "vm", "isolation": "microvm", "readySessionInstances": 2}]}, f)
    cmd = [os.path.join(a.build, "src", "sandpool"), "serve", "--listen", "127.0.0.1:0", "--port-file", port_file,
           "--no-default-pool", "--pools-file", pools] + (["--agent-dir", a.agent_dir] if a.agent_dir else [])
    log = open(os.path.join(d, "stderr"), "wb")
    srv = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 120
        while not (os.path.exists(port_file) and open(port_file).read().strip()):
            if srv.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server did not start: " + open(log.name).read())
            time.sleep(0.05)
        port = int(open(port_file).read())
        time.sleep(3)  # the ready sandboxes' agents say Hello
        first, second = [], []
        for i in range(a.n):
            c = pe.Client(port, "vm", "first-%d" % i)
            first.append(c.execute())
            second.append(c.execute())
            c.s.sendall(b"DELETE /pools/vm/session?identifier=first-%d HTTP/1.1\r\nHost: b\r\n"
                        b"Content-Length: 0\r\nConnection: close\r\n\r\n" % i)
            head = c.s.recv(4096)  # 204: no body
            if not head.startswith(b"HTTP/1.1 204"):
                raise RuntimeError("delete: %r" % head[:60])
            c.s.close()
            time.sleep(0.5)  # refill
        for name, v in (("first execute", first), ("second execute", second)):
            print("%s: p50 %.0f µs (p10 %.0f, p90 %.0f, n=%d)" % (name, statistics.median(v), pe.pct(v, 10), pe.pct(v, 90), len(v)))
    finally:
        srv.terminate()
        srv.wait(30)
        log.close()


if __name__ == "__main__":
    sys.exit(main())
