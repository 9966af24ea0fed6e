#!/usr/bin/python3
"""Warm `print(1)` execute latency of a micro-VM pool against a process pool, same server, same run.

One `sandpool serve` with two pools (`vm`: isolation microvm, `proc`: isolation process); one
session in each, warmed with a few executes, then N executes of print(1) alternating between
the two (so machine noise hits both alike), each over a kept-alive loopback connection.
Usage: pool_execute.py BUILD_DIR [--n 300] [--server-arg=--busy-poll-us=0 ...]
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

BODY = json.dumps({"properties": {"codeInputType": "inline", "executionType": "synchronous", "code": "print(1)"}}).encode()


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]


class Client:
    def __init__(self, port, pool, ident):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.req = (b"POST /pools/" + pool.encode() + b"/code/execute?identifier=" + ident.encode() +
                    b" HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nContent-Length: " +
                    str(len(BODY)).encode() + b"\r\n\r\n" + BODY)

    def call(self, method, target, body=b""):
        req = ("%s %s HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" %
               (method, target, len(body))).encode() + body
        return self._roundtrip(req)

    def _roundtrip(self, req):
        self.s.sendall(req)
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.s.recv(65536)
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
        while len(rest) < length:
            rest += self.s.recv(65536)
        body, self.buf = rest[:length], rest[length:]
        return head, body

    def execute(self):
        t0 = time.perf_counter_ns()
        head, body = self._roundtrip(self.req)
        t1 = time.perf_counter_ns()
        if not head.startswith(b"HTTP/1.1 200") or b'"stdout":"1\\n"' not in body:
            raise RuntimeError("bad answer: %r %r" % (head[:60], body[:200]))
        return (t1 - t0) / 1000.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--server-arg", action="append", default=[], help="one more argument for `sandpool serve` (repeatable)")
    a = ap.parse_args()
    binary = os.path.join(a.build, "src", "sandpool")
    d = tempfile.mkdtemp(prefix="sp-vmbench-")
    port_file = os.path.join(d, "port")
    pools = os.path.join(d, "pools.json")
    with open(pools, "w") as f:
        json.dump({"pools": [{"name": "vm", "isolation": "microvm", "readySessionInstances": 1},
                             {"name": "proc", "isolation": "process", "readySessionInstances": 1}]}, f)
    log = open(os.path.join(d, "stderr"), "wb")
    srv = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--port-file", port_file, "--no-default-pool",
                            "--pools-file", pools] + a.server_arg, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 120
        while not (os.path.exists(port_file) and open(port_file).read().strip()):
            if srv.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server did not start: " + open(log.name).read())
            time.sleep(0.05)
        port = int(open(port_file).read())
        clients = {"microvm": Client(port, "vm", "bench-vm-1"), "process": Client(port, "proc", "bench-proc-1")}
        for c in clients.values():
            for _ in range(20):
                c.execute()
        samples = {k: [] for k in clients}
        for _ in range(a.n):
            for k, c in clients.items():
                samples[k].append(c.execute())
        print("| pool | n | p50 µs | p90 µs | p99 µs |\n|---|---|---|---|---|")
        for k, us in samples.items():
            print("| %s | %d | %.0f | %.0f | %.0f |" % (k, len(us), pct(us, 50), pct(us, 90), pct(us, 99)))
        print("\nratio microvm/process p50: %.2f×" % (pct(samples["microvm"], 50) / pct(samples["process"], 50)))
        _, metrics = clients["microvm"].call("GET", "/metrics")
        for line in metrics.decode().splitlines():
            if line.startswith("sandpool_pool_isolation{"):
                print("    " + line)
    finally:
        srv.terminate()
        srv.wait(30)
        log.close()


if __name__ == "__main__":
    sys.exit(main())
