#!/usr/bin/env python3
"""Private memory of each idle ready sandbox of a real server's default pool (what the ready ring
holds), per isolation tier: Private_Clean + Private_Dirty of smaps_rollup, summed over the
sandbox's processes (process tier: its init, supervisor and worker; micro-VM tier: its VMM child).
The micro-VM template's spare child (still in the template's cgroup) is not counted.
Also what the sandbox's own memory cgroup charges (memory.usage_in_bytes on v1, memory.current on
v2: its pages and kernel memory; not the page tables of pid 1, which its template's cgroup holds).
Private_Dirty alone is printed too: with the template's memory shared through a memfd (the
default, --template-memory shared), a page of it that only this sandbox maps is Private_Clean
though the template's cgroup holds it and every clone may map it.
What a sandbox costs its template's cgroup (the page tables the fork copies for pid 1, its kernel
structures) is measured too: the template cgroup's growth when the pool's ready target is raised by
GROW, divided by GROW; the total per sandbox is the two added.
Usage: bench/sessions/idle_memory.py BUILD_DIR [process|microvm ...] [--server-arg=ARG ...]    (root)
"""
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_sessions as bs  # noqa: E402  (wait_ready, one_request)

READY = 6
GROW = 20


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


def private_kib(pid, fields=("Private_Clean", "Private_Dirty")):
    with open("/proc/%d/smaps_rollup" % pid) as f:
        return sum(int(l.split()[1]) for l in f if l.startswith(fields))


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


def set_ready(port, n):
    body = json.dumps({"readySessionInstances": n}).encode()
    answer = bs.one_request(port, b"PATCH /pools/default HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
                            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    if not answer.startswith(b"HTTP/1.1 200"):
        raise RuntimeError("PATCH readySessionInstances: %r" % answer[:200])


def template_growth_kib(port, templates, sandboxes_now):
    """KiB the templates' memory cgroups grow by per sandbox when GROW more are made."""
    before = sum(memcg_kib(t) or 0 for t in templates)
    set_ready(port, sandboxes_now + GROW)
    bs.wait_ready(port, sandboxes_now + GROW)
    time.sleep(3)
    after = sum(memcg_kib(t) or 0 for t in templates)
    return (after - before) / GROW


def measure(build, tier, server_args):
    tmp = tempfile.mkdtemp()
    port_file = os.path.join(tmp, "port")
    proc = subprocess.Popen([os.path.join(build, "src", "sandpool"), "serve", "--listen", "127.0.0.1:0",
                             "--port-file", port_file, "--log-level", "warn", "--pool-ready", str(READY),
                             "--pool-isolation", tier] + server_args)
    try:
        while not os.path.exists(port_file):
            time.sleep(0.02)
        port = int(open(port_file).read())
        bs.wait_ready(port, READY)
        time.sleep(3)  # let the last ones settle after their hello
        values, dirty, charged = [], [], []
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
                dirty.append(sum(private_kib(p, ("Private_Dirty",)) for p in tree))
                kib = memcg_kib(sandbox)
                if kib is not None:
                    charged.append(kib)
        growth = template_growth_kib(port, children(proc.pid), len(values))
        return values, dirty, charged, growth
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        shutil.rmtree(tmp)


def main():
    build = sys.argv[1]
    server_args = [a.split("=", 1)[1] for a in sys.argv[2:] if a.startswith("--server-arg=")]
    tiers = [a for a in sys.argv[2:] if not a.startswith("--server-arg=")] or ["process", "microvm"]
    print("# %s, load %s" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), open("/proc/loadavg").read().split()[0]))
    for tier in tiers:
        v, d, c, g = measure(build, tier, server_args)
        print("%-8s %d idle sandboxes: private KiB median %s (min %s, max %s), of which dirty %s; "
              "own memory cgroup KiB median %s (max %s); template cgroup +%.0f KiB per sandbox "
              "(%d more made); total per sandbox %s KiB%s" %
              (tier, len(v), statistics.median(v) if v else "-", min(v, default="-"), max(v, default="-"),
               statistics.median(d) if d else "-", statistics.median(c) if c else "-", max(c, default="-"),
               g, GROW, "%.0f" % (statistics.median(c) + g) if c else "-",
               "  [" + " ".join(server_args) + "]" if server_args else ""))


if __name__ == "__main__":
    main()
