#!/usr/bin/python3
"""`isolation` where KVM does not work: the server runs in a private mount namespace in which
/dev/kvm is /dev/null (it opens, but is no KVM). `microvm` must refuse to create the pool with a
clear error; `auto` must fall back to process, say so in the log and in /metrics. (Where KVM works,
integration-sessions-microvm checks that `auto` picks microvm.)

Usage: isolation_test.py PATH_TO_SANDPOOL. Exit 77 when it cannot make the mount namespace.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import harness

SKIP = 77
HIDE_KVM = "mount --bind /dev/null /dev/kvm && exec \"$@\""


def read(path):
    with open(path) as f:
        return f.read()


def serve(*flags, timeout=60):
    """Runs `sandpool serve` with /dev/kvm hidden; returns (process, port or None, stderr path, dir)."""
    d = tempfile.mkdtemp(prefix="sp-iso-")
    port_file = os.path.join(d, "port")
    err = os.path.join(d, "stderr")
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", HIDE_KVM, "sh", harness.BINARY, "serve",
           "--listen", "127.0.0.1:0", "--port-file", port_file] + list(flags)
    with open(err, "wb") as f:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=f)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(port_file) and read(port_file).strip():
            return p, int(read(port_file)), err, d
        if p.poll() is not None:
            return p, None, err, d
        time.sleep(0.05)
    p.kill()
    p.wait()
    return p, None, err, d


class IsolationWithoutKvm(unittest.TestCase):
    def test_microvm_is_refused_with_a_clear_error(self):
        p, port, err, d = serve("--pool-isolation", "microvm", "--pool-ready", "1")
        try:
            self.assertIsNone(port, "the server started a microvm pool without KVM")
            self.assertNotEqual(p.wait(30), 0)
            log = read(err)
            self.assertIn("isolation microvm needs KVM", log)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            shutil.rmtree(d, ignore_errors=True)

    def test_auto_falls_back_to_process_and_says_so(self):
        p, port, err, d = serve("--pool-isolation", "auto", "--pool-ready", "1")
        try:
            self.assertIsNotNone(port, read(err))
            srv = harness.Server()
            srv.dir.cleanup()  # only its HTTP client is used
            srv.port = port
            r, j = srv.json("POST", "/code/execute?identifier=auto-proc-1",
                            {"properties": {"codeInputType": "inline", "executionType": "synchronous", "code": "6 * 7"}})
            self.assertEqual(j["properties"]["result"], 42, j)
            text = srv.request("GET", "/metrics").body.decode()
            self.assertIn('sandpool_pool_isolation{pool="default",tier="process"} 1', text)
            self.assertIn("pool default: isolation auto -> process", read(err))
        finally:
            p.terminate()
            self.assertEqual(p.wait(30), 0, read(err))
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    harness.BINARY = os.path.abspath(sys.argv.pop(1))
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", "mount --bind /dev/null /dev/kvm"],
                           capture_output=True, text=True) if os.path.exists("/dev/kvm") else None
    if probe is None or probe.returncode != 0:
        print("SKIP: cannot hide /dev/kvm in a private mount namespace: %s" % (probe.stderr if probe else "no /dev/kvm"))
        sys.exit(SKIP)
    unittest.main(verbosity=2)
