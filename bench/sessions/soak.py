#!/usr/bin/env python3
"""Soak: sessions made, used and ended for minutes on one server; what it holds afterwards.

Client threads each loop: a new identifier, an execute that sets a variable, a file uploaded and
read back byte for byte, an execute that reads the variable again (state kept), then the session
is either deleted (DELETE session) or left to its short cooldown. Every --sample-s the server's
resident memory, open descriptors and threads, the server's cgroup directories, the processes
under the server and the host mounts naming sandpool are recorded. After the load stops and the
cooldowns have passed, each must be back near its level before the load (the ready pool only);
the exit status is 1 when one is not, or when a request failed in a way the contract does not allow
(429 while the pool is full is allowed and counted).
Usage: bench/sessions/soak.py BUILD_DIR [--minutes M] [--clients C] [--isolation process|microvm]
                              [--cooldown S] [--ready N] [--max N] [--sample-s S]
"""
import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_sessions import descendants_cpu_s, metric, start_server  # noqa: E402


def cgroup_dirs(pid):
    """The cgroup directories of server `pid`: its owner directory sandpool/o<pid>_<start time> in
    every hierarchy and all below (another sandpool on the host, a test run, is not counted)."""
    n = 0
    for ctrl in os.listdir("/sys/fs/cgroup"):
        top = os.path.join("/sys/fs/cgroup", ctrl, "sandpool")
        try:
            owners = [d for d in os.listdir(top) if d.startswith("o%d_" % pid)]
        except OSError:
            continue
        for owner in owners:
            n += 1
            for _, dirs, _ in os.walk(os.path.join(top, owner)):
                n += len(dirs)
    return n


def sample(pid):
    status = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            status[k] = v.strip()
    with open("/proc/self/mountinfo") as f:
        mounts = sum("sandpool" in line for line in f)
    return {"rss_kib": int(status["VmRSS"].split()[0]), "fds": len(os.listdir("/proc/%d/fd" % pid)),
            "threads": int(status["Threads"]), "cgroup_dirs": cgroup_dirs(pid), "processes": len(descendants_cpu_s(pid)),
            "mounts": mounts}


class Load:
    def __init__(self, port, deadline):
        self.port, self.deadline = port, deadline
        self.lock = threading.Lock()
        self.counts = {"sessions": 0, "deleted": 0, "left_to_cooldown": 0, "pool_full_429": 0}
        self.failures = []

    def count(self, key):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1

    def fail(self, what):
        with self.lock:
            if len(self.failures) < 50:
                self.failures.append(what)
            self.counts["failures"] = self.counts.get("failures", 0) + 1

    def request(self, conn, method, path, body=None, headers=None):
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()

    def execute(self, conn, ident, code):
        body = json.dumps({"properties": {"codeInputType": "inline", "executionType": "synchronous", "code": code}})
        return self.request(conn, "POST", "/code/execute?identifier=" + ident, body, {"Content-Type": "application/json"})

    def client(self, tid):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        rng = random.Random(tid)
        i = 0
        while time.time() < self.deadline:
            i += 1
            ident = "soak-%d-%d" % (tid, i)
            try:
                st, body = self.execute(conn, ident, "x = %d" % i)
                if st == 429:
                    self.count("pool_full_429")
                    time.sleep(0.2)
                    continue
                if st != 200 or json.loads(body)["properties"]["status"] != "Success":
                    self.fail("%s first execute: %d %r" % (ident, st, body[:200]))
                    continue
                self.count("sessions")
                data = os.urandom(rng.randrange(1, 64 * 1024))
                boundary = "soakboundary%d" % i
                form = (b"--" + boundary.encode() + b"\r\nContent-Disposition: form-data; name=\"file\"; filename=\"blob.bin\"\r\n"
                        b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n--" + boundary.encode() + b"--\r\n")
                st, body = self.request(conn, "POST", "/files/upload?identifier=" + ident, form,
                                        {"Content-Type": "multipart/form-data; boundary=" + boundary})
                if st != 200:
                    self.fail("%s upload: %d %r" % (ident, st, body[:200]))
                st, body = self.request(conn, "GET", "/files/content/blob.bin?identifier=" + ident)
                if st != 200 or body != data:
                    self.fail("%s read back: %d, %d bytes of %d, equal %s" % (ident, st, len(body), len(data), body == data))
                st, body = self.execute(conn, ident, "x + 1")
                if st != 200 or json.loads(body)["properties"].get("result") != i + 1:
                    self.fail("%s state: %d %r" % (ident, st, body[:200]))
                if rng.random() < 0.5:
                    st, body = self.request(conn, "DELETE", "/session?identifier=" + ident)
                    if st not in (200, 204):
                        self.fail("%s delete: %d %r" % (ident, st, body[:200]))
                    self.count("deleted")
                else:
                    self.count("left_to_cooldown")
            except (OSError, http.client.HTTPException, ValueError, KeyError) as e:
                self.fail("%s: %s: %s" % (ident, type(e).__name__, e))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--isolation", default="process")
    ap.add_argument("--cooldown", type=int, default=2)
    ap.add_argument("--ready", type=int, default=4)
    ap.add_argument("--max", type=int, default=24)
    ap.add_argument("--sample-s", type=float, default=30)
    a = ap.parse_args()
    binary = os.path.join(a.build, "src", "sandpool")
    log = open(os.path.join(tempfile.mkdtemp(), "server.log"), "w")
    proc, port = start_server(a.build, ["--pool-ready", str(a.ready), "--pool-max", str(a.max), "--pool-cooldown",
                                        str(a.cooldown), "--pool-isolation", a.isolation],
                              stdout=log, stderr=subprocess.STDOUT)
    ok = True
    try:
        ready = 'sandpool_pool_sessions{pool="default",state="Ready"}'
        while metric(port, ready) < a.ready:
            time.sleep(0.1)
        time.sleep(2)
        print("# soak: sandpool %s, isolation %s, %d clients, %g min, cooldown %d s, ready %d, max %d; %s, load %s" % (
            binary, a.isolation, a.clients, a.minutes, a.cooldown, a.ready, a.max,
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), open("/proc/loadavg").read().split()[0]))
        rows = [("before", sample(proc.pid))]
        t0 = time.time()
        load = Load(port, t0 + a.minutes * 60)
        threads = [threading.Thread(target=load.client, args=(i,)) for i in range(a.clients)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            time.sleep(min(a.sample_s, max(0.1, load.deadline - time.time() + 0.1)))
            if time.time() < load.deadline:
                rows.append(("%.0f s" % (time.time() - t0), sample(proc.pid)))
        for t in threads:
            t.join()
        # The cooldowns pass, the deletions finish, the pool refills to its ready count.
        settle = time.time() + a.cooldown + 60
        while time.time() < settle:
            allocated = metric(port, 'sandpool_pool_sessions{pool="default",state="Allocated"}')
            deleting = metric(port, 'sandpool_pool_sessions{pool="default",state="Deleting"}')
            if allocated == 0 and deleting == 0 and metric(port, ready) >= a.ready:
                break
            time.sleep(0.5)
        time.sleep(3)
        rows.append(("after, settled", sample(proc.pid)))
        keys = ["rss_kib", "fds", "threads", "cgroup_dirs", "processes", "mounts"]
        print("| when | " + " | ".join(keys) + " |")
        print("|---|" + "---:|" * len(keys))
        for when, s in rows:
            print("| %s | %s |" % (when, " | ".join(str(s[k]) for k in keys)))
        print("requests: " + ", ".join("%s %d" % kv for kv in sorted(load.counts.items())))
        print("spawn failures: %d" % metric(port, 'sandpool_pool_spawn_failures_total{pool="default"}'))
        before, after = rows[0][1], rows[-1][1]
        for k, slack in (("fds", 2), ("threads", 0), ("cgroup_dirs", 0), ("processes", 0), ("mounts", 0)):
            if after[k] > before[k] + slack:
                ok = False
                print("LEAK? %s: %d before the load, %d after it settled" % (k, before[k], after[k]))
        if load.failures:
            ok = False
            print("FAILURES (%d):" % load.counts.get("failures", 0))
            for f in load.failures:
                print("  " + f)
        print("result: %s" % ("nothing left behind, no failed request" if ok else "see above"))
    finally:
        proc.terminate()
        proc.wait()
        log.close()
        if not ok:
            print("server log: " + log.name)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
