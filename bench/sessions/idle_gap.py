#!/usr/bin/env python3
"""How long an execute takes after the session (and the machine) sat idle, against back-to-back
executes of the same session in the same run, and a new identifier after the same idle time.

The first execute on a new identifier (bench_sessions.py "first") always follows an idle gap; this
separates what the gap costs on this machine from what a new identifier costs.
Usage: bench/sessions/idle_gap.py BUILD_DIR [--n N]
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_sessions as bs  # noqa: E402  (Client, summary, wait_ready)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--n", type=int, default=30)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp()
    port_file = os.path.join(tmp, "port")
    ready = 4
    proc = subprocess.Popen([os.path.join(a.build, "src", "sandpool"), "serve", "--listen", "127.0.0.1:0",
                             "--port-file", port_file, "--log-level", "warn", "--pool-ready", str(ready),
                             "--pool-max", "1000"])
    try:
        while not os.path.exists(port_file):
            time.sleep(0.02)
        port = int(open(port_file).read())
        print("# sandpool %s, %d cores, %s, load %s" % (a.build, os.cpu_count(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                                        open("/proc/loadavg").read().split()[0]))
        c = bs.Client(port)
        bs.wait_ready(port, ready)
        for _ in range(20):
            c.execute("idle-gap")
        for gap_ms in (0, 1, 10, 50, 100):
            times = []
            for _ in range(a.n):
                if gap_ms:
                    time.sleep(gap_ms / 1000.0)
                times.append(c.execute("idle-gap"))
            print(bs.summary("gap%dms" % gap_ms, times) + "   (same session, %d ms idle before each)" % gap_ms)
        times = []
        for i in range(a.n):
            bs.wait_ready(port, ready)
            time.sleep(0.1)
            times.append(c.execute("idle-new-%d" % i))
        print(bs.summary("new", times) + "   (a new identifier, pool refilled, 100 ms idle before each)")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
