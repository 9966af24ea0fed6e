#!/usr/bin/env python3
"""End-to-end session benchmarks over loopback HTTP, with the peer a user would pick today in the
same run: a Jupyter kernel (Debian python3-ipykernel + python3-jupyter-client) executing the same cell.

Measures (shared/DESIGN.md §8, each reported separately):
  first  : first execute of print(1) on a new identifier (ready pool), latency per request, while
           the pool refills in the background (one new identifier every --pace-ms)
  first-quiet: the same with the pool refilled and idle before each new identifier
  warm   : execute of print(1) on an existing session
  jupyter: the same cell through jupyter_client against one kernel
  tput   : trivial executes/s over 64 sessions with wrk -c64 (if wrk is installed), started once
           the pool has refilled after the 64 sessions were made, with the CPU time per execute
           of the server, of its sandboxes (agents), and of wrk
A count of 0 skips that part (e.g. --first 0 --first-quiet 0 --warm 0 --jupyter 0: tput only).
Usage: bench/sessions/bench_sessions.py BUILD_DIR [--first N] [--first-quiet N] [--warm N] [--jupyter N]
                                           [--seconds S] [--pace-ms MS]
"""
import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time

BODY = json.dumps({"properties": {"codeInputType": "inline", "executionType": "synchronous", "code": "print(1)"}}).encode()


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]


def summary(name, us):
    return "%-8s n=%-5d p50 %8.1f us   p90 %8.1f us   p99 %8.1f us" % (name, len(us), pct(us, 50), pct(us, 90), pct(us, 99))


class Client:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def execute(self, ident):
        req = (b"POST /code/execute?identifier=" + ident.encode() + b" HTTP/1.1\r\nHost: b\r\n"
               b"Content-Type: application/json\r\nContent-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
        t0 = time.perf_counter_ns()
        self.s.sendall(req)
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.s.recv(65536)
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
        while len(rest) < length:
            rest += self.s.recv(65536)
        t1 = time.perf_counter_ns()
        body, self.buf = rest[:length], rest[length:]
        if not head.startswith(b"HTTP/1.1 200") or b'"stdout":"1\\n"' not in body:
            raise RuntimeError("bad answer: %r %r" % (head[:60], body[:200]))
        return (t1 - t0) / 1000.0


def one_request(port, raw):
    """Sends one whole request (with Connection: close) on a new connection; the answer, whole."""
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(raw)
    data = b""
    while True:
        d = c.recv(65536)
        if not d:
            break
        data += d
    c.close()
    return data


def metric(port, name):
    data = one_request(port, b"GET /metrics HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
    for line in data.decode().splitlines():
        if line.startswith(name):
            return float(line.split()[-1])
    return 0.0


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants_cpu_s(root):
    """{pid: CPU seconds} of every process below `root` (its sandboxes: agents, templates)."""
    parent, cpu = {}, {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(name)
        parent[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in cpu:
        p, hops = parent.get(pid, 0), 0
        while p > 1 and p != root and hops < 64:
            p, hops = parent.get(p, 0), hops + 1
        if p == root:
            out[pid] = cpu[pid]
    return out


def start_server(build, args, **popen_kw):
    """`sandpool serve` of `build` on a free loopback port with `args` added: (process, port)."""
    binary = os.path.join(build, "src", "sandpool")
    port_file = os.path.join(tempfile.mkdtemp(), "port")
    proc = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--port-file", port_file, "--log-level", "warn"]
                            + list(args), **popen_kw)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(port_file):
            text = open(port_file).read().strip()  # (written whole: a rename)
            if text:
                shutil.rmtree(os.path.dirname(port_file))
                return proc, int(text)
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    raise RuntimeError("the server did not start (exit status %s)" % proc.returncode)


def wait_ready(port, want, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if metric(port, 'sandpool_pool_sessions{pool="default",state="Ready"}') >= want:
            return
        time.sleep(0.05)
    raise RuntimeError("pool did not fill")


def jupyter_bench(n):
    try:
        from jupyter_client import KernelManager
    except ImportError:
        return None
    km = KernelManager(kernel_name="python3")
    km.kernel_cmd = ["/usr/bin/python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    times = []
    try:
        for i in range(n + 20):
            t0 = time.perf_counter_ns()
            msg_id = kc.execute("print(1)")
            got_out = False
            while True:
                m = kc.get_iopub_msg(timeout=10)
                if m["parent_header"].get("msg_id") != msg_id:
                    continue
                if m["msg_type"] == "stream":
                    got_out = True
                if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                    break
            kc.get_shell_msg(timeout=10)
            t1 = time.perf_counter_ns()
            if i >= 20 and got_out:
                times.append((t1 - t0) / 1000.0)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--first", type=int, default=200)
    ap.add_argument("--first-quiet", type=int, default=50)
    ap.add_argument("--warm", type=int, default=2000)
    ap.add_argument("--jupyter", type=int, default=500)
    ap.add_argument("--seconds", type=int, default=5, help="length of the wrk throughput run; 0: none")
    ap.add_argument("--pace-ms", type=int, default=50)
    ap.add_argument("--server-arg", action="append", default=[],
                    help="one more argument for `sandpool serve` (repeatable), e.g. --server-arg=--agent-dir=DIR")
    a = ap.parse_args()
    binary = os.path.join(a.build, "src", "sandpool")
    ready = 64
    proc, port = start_server(a.build, ["--pool-ready", str(ready), "--pool-max", "2000"] + a.server_arg)
    try:
        print("# sandpool %s, %d cores, %s" % (binary, os.cpu_count(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))
        c = Client(port)
        # First execute on new identifiers, one every --pace-ms, as a steady stream of new sessions:
        # the pool stays non-empty while it refills in the background, as it does in service.
        wait_ready(port, ready)
        first = []
        next_t = time.monotonic()
        for i in range(a.first):
            next_t += a.pace_ms / 1000.0
            first.append(c.execute("first-%d" % i))
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        if first:
            print(summary("first", first) + "   (one new identifier every %d ms, refill running)" % a.pace_ms)
        quiet = []
        for i in range(a.first_quiet):
            wait_ready(port, ready)
            time.sleep(0.1)
            quiet.append(c.execute("quiet-%d" % i))
        if quiet:
            print(summary("first-q", quiet) + "   (pool refilled and idle before each new identifier)")
        # warm executes on one session
        warm = []
        for i in range(a.warm + 100):
            t = c.execute("warm-1")
            if i >= 100:
                warm.append(t)
        if warm:
            print(summary("warm", warm))
        jt = jupyter_bench(a.jupyter) if a.jupyter else []
        if jt and warm and first:
            print(summary("jupyter", jt))
            print("ratio jupyter/sandpool warm p50: %.1fx   (jupyter p50 / sandpool first p50: %.1fx)" %
                  (pct(jt, 50) / pct(warm, 50), pct(jt, 50) / pct(first, 50)))
        elif jt is None:
            print("jupyter: jupyter_client not installed (tools/install-deps.sh bench)")
        if a.seconds > 0 and shutil.which("wrk"):
            env = dict(os.environ, SESSIONS="64")
            script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "execute.lua")
            # warm the 64 sessions first
            for i in range(64):
                c.execute("bench-%d" % i)
            # The 64 allocations started as many refills (a fork of the template and an agent start
            # each, 15-30 ms of CPU): let them finish, so that the run measures executes only.
            wait_ready(port, ready)
            time.sleep(0.5)
            cpu0, sandboxes0 = cpu_s(proc.pid), descendants_cpu_s(proc.pid)
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            out = subprocess.run(["wrk", "-t1", "-c64", "-d%ds" % a.seconds, "--latency", "-s", script,
                                  "http://127.0.0.1:%d" % port], env=env, capture_output=True, text=True).stdout
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            server_cpu = cpu_s(proc.pid) - cpu0
            sandboxes1 = descendants_cpu_s(proc.pid)
            # processes that ended during the run are left out (none should: sessions stay)
            sandbox_cpu = sum(v - sandboxes0.get(pid, 0.0) for pid, v in sandboxes1.items())
            wrk_cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
            rps = [l for l in out.splitlines() if "Requests/sec" in l]
            lat = [l.strip() for l in out.splitlines() if l.strip().startswith(("50%", "99%"))]
            total = [l for l in out.splitlines() if "requests in" in l]
            n = int(total[0].split()[0]) if total else 0
            print("tput    64 sessions, wrk -t1 -c64 -d%ds: %s/s  latency %s  server CPU %.1f us/execute" %
                  (a.seconds, rps[0].split()[-1] if rps else "?", " ".join(lat), server_cpu * 1e6 / max(n, 1)))
            print("tput    CPU per execute: server %.1f us, sandboxes (agents) %.1f us, wrk %.1f us; %d executes" %
                  (server_cpu * 1e6 / max(n, 1), sandbox_cpu * 1e6 / max(n, 1), wrk_cpu * 1e6 / max(n, 1), n))
            if "status" in out:
                print(out)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


if __name__ == "__main__":
    main()
