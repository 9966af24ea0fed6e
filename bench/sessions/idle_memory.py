#!/usr/bin/env python3
"""Private memory of each idle ready sandbox of a real server's default pool (what the ready ring
holds), per isolation tier: Private_Clean + Private_Dirty of smaps_rollup, summed over the
sandbox's processes (process tier: its init, supervisor and worker; micro-VM tier: its VMM child).
The micro-VM template's spare child (still in the template's cgroup) is not counted.
Also what the sandbox's own memory cgroup charges (memory.usage_in_bytes on v1, memory.current on
v2: its pages and kernel memory; not the page tables of pid 1, which its template's cgroup holds).
Usage: bench/sessions/idle_memory.py BUILD_DIR [process|microvm ...]    (root)
"""
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_sessions as bs  # noqa: E402  (wait_ready)

READY = 6


def children(pid):
    out = []
    for t in os.listdir("/proc"):
        if t.isdigit():
            try:
                with open("/proc/%s/stat" % t) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(t))
            except OSError:
                pass
    return out


def private_kib(pid):
    with open("/proc/%d/smaps_rollup" % pid) as f:
        return sum(int(l.split()[1]) for l in f if l.startswith(("Private_Clean", "Private_Dirty")))


def memory_cgroup(pid):
    with open("/proc/%d/cgroup" % pid) as f:
        return [l for l in f.read().splitlines() if ":memory:" in l or l.startswith("0::")][0]


def memcg_kib(pid):
    """The charge of `pid`'s memory cgroup in KiB, or None."""
    line = memory_cgroup(pid)
    path = line.split(":", 2)[2]
    for f in ("/sys/fs/cgroup/memory%s/memory.usage_in_bytes" % path, "/sys/fs/cgroup%s/memory.current" % path):
        try:
            with open(f) as fh:
                return int(fh.read()) // 1024
        except OSError:
            pass
    return None


def measure(build, tier):
    tmp = tempfile.mkdtemp()
    port_file = os.path.join(tmp, "port")
    proc = subprocess.Popen([os.path.join(build, "src", "sandpool"), "serve", "--listen", "127.0.0.1:0",
                             "--port-file", port_file, "--log-level", "warn", "--pool-ready", str(READY),
                             "--pool-isolation", tier])
    try:
        while not os.path.exists(port_file):
            time.sleep(0.02)
        bs.wait_ready(int(open(port_file).read()), READY)
        time.sleep(3)  # let the last ones settle after their hello
        values, charged = [], []
        for tpl in children(proc.pid):
            for sandbox in children(tpl):
                if "tpl-" in memory_cgroup(sandbox):
                    continue  # the micro-VM template's spare
                tree, todo = [], [sandbox]
                while todo:
                    p = todo.pop()
                    tree.append(p)
                    todo += children(p)
                values.append(sum(private_kib(p) for p in tree))
                kib = memcg_kib(sandbox)
                if kib is not None:
                    charged.append(kib)
        return values, charged
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        shutil.rmtree(tmp)


def main():
    build = sys.argv[1]
    tiers = sys.argv[2:] or ["process", "microvm"]
    print("# %s, load %s" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), open("/proc/loadavg").read().split()[0]))
    for tier in tiers:
        v, c = measure(build, tier)
        print("%-8s %d idle sandboxes: private KiB median %s (min %s, max %s); own memory cgroup KiB median %s (max %s)" %
              (tier, len(v), statistics.median(v) if v else "-", min(v, default="-"), max(v, default="-"),
               statistics.median(c) if c else "-", max(c, default="-")))


if __name__ == "__main__":
    main()
