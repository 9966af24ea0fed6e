#!/usr/bin/python3
"""How much creating and deleting pools stalls other sessions: one client runs a warm `print(1)`
execute loop on one session of the default pool while another creates a custom-container pool from
a test image (the first create imports the image into a fresh store), waits for it to answer,
deletes it, does the same with a Python pool, and repeats. Prints the execute latencies while quiet and during each management call,
and the worst stall (the longest execute that overlapped a management call or the 1.5 s after a
delete, while its teardown may still run).

Usage: bench/sessions/pool_churn_stall.py BUILD_DIR [CYCLES] [IMAGES_DIR]   (root, like container pools)
Images: IMAGES_DIR, default BUILD_DIR/test-images (tools/make-test-images.sh DIR builds them).
"""
import json
import os
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "integration"))
import harness  # noqa: E402


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else 0.0


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    cycles = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    images = sys.argv[3] if len(sys.argv) > 3 else os.path.join(build, "test-images")
    if not os.path.isdir(os.path.join(images, "pyapp")):
        sys.exit("no test images in %s: run tools/make-test-images.sh %s" % (images, images))
    harness.BINARY = os.path.join(build, "src", "sandpool")
    store = tempfile.TemporaryDirectory(prefix="sp-churn-")
    os.chmod(store.name, 0o755)
    srv = harness.Server("--image-store", os.path.join(store.name, "images"), "--pool-ready", "2", pools=True)
    srv.start()
    samples = []  # (start, end) of each execute, time.monotonic()
    stop = threading.Event()
    body = json.dumps({"properties": {"codeInputType": "inline", "executionType": "synchronous",
                                      "code": "print(1)"}}).encode()
    hdrs = {"Host": "x", "Content-Type": "application/json"}

    def exec_loop():
        c = srv.connect()
        while not stop.is_set():
            t0 = time.monotonic()
            r = c.send_request("POST", "/code/execute?identifier=warm", body, hdrs).read_response()
            t1 = time.monotonic()
            if r.status != 200:
                print("execute answered", r.status, r.body[:200])
            samples.append((t0, t1))
        c.close()

    def manage(method, target, obj=None):
        # A Python pool's template start can take 10 s on a loaded machine: a long timeout.
        c = srv.connect(timeout=180)
        try:
            b = json.dumps(obj).encode() if obj is not None else b""
            return c.send_request(method, target, b, {"Host": "x", "Connection": "close",
                                                      "Content-Type": "application/json"}).read_response()
        finally:
            c.close()

    try:
        # Warm the session first.
        c = srv.connect()
        for _ in range(200):
            c.send_request("POST", "/code/execute?identifier=warm", body, hdrs).read_response()
        c.close()
        th = threading.Thread(target=exec_loop)
        th.start()
        time.sleep(2.0)
        quiet_end = time.monotonic()
        spans = []  # (label, start, end, status)
        pool = {"name": "churn", "containerType": "CustomContainer", "image": os.path.join(os.path.abspath(images), "pyapp"),
                "targetPort": 8080, "readySessionInstances": 1, "env": [{"name": "QUIET", "value": "1"}]}
        pypool = {"name": "pychurn", "containerType": "PythonLTS", "readySessionInstances": 1}
        for i in range(cycles):
            # Custom container (cycle 0 imports the image; later ones reuse it), then a Python pool
            # (its template imports numpy, pandas and matplotlib).
            for kind, p in (("ct", pool), ("py", pypool)):
                t0 = time.monotonic()
                r = manage("POST", "/pools", p)
                spans.append(("%s-create%d" % (kind, i), t0, time.monotonic(), r.status))
                time.sleep(1.0)
                t0 = time.monotonic()
                r = manage("DELETE", "/pools/" + p["name"])
                spans.append(("%s-delete%d" % (kind, i), t0, time.monotonic(), r.status))
                time.sleep(1.5)  # teardown that continues after the answer is still counted below
                spans.append(("%s-after-del%d" % (kind, i), t0, time.monotonic(), 0))
        stop.set()
        th.join()
    finally:
        stop.set()
        rc = srv.stop()
    quiet = [(b - a) * 1e3 for a, b in samples if b <= quiet_end]
    print("server exit code", rc)
    print("quiet: n=%d p50 %.3f ms p99 %.3f ms max %.3f ms" % (len(quiet), statistics.median(quiet), pct(quiet, 0.99), max(quiet)))
    worst = 0.0
    for label, a, b, status in spans:
        lat = [(e - s) * 1e3 for s, e in samples if e >= a and s <= b]
        if not lat:
            continue
        worst = max(worst, max(lat))
        print("%-14s %4s call %8.1f ms | executes overlapping: n=%d p50 %.3f ms max %.3f ms" % (
            label, status or "", (b - a) * 1e3, len(lat), statistics.median(lat), max(lat)))
    print("worst stall: %.1f ms (quiet max %.3f ms)" % (worst, max(quiet)))


if __name__ == "__main__":
    main()
