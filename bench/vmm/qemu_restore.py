#!/usr/bin/env python3
"""The peer of issue 6: QEMU (Debian qemu-system-x86, -M microvm, KVM) restoring a snapshot with
-incoming "exec:cat FILE", against our copy-on-write clone (`sandpool vm-run --clones`), same run.

QEMU: a source VM (256 MiB, its firmware running; this kvm-pvm host boots no Linux guest) is stopped
and migrated to a file; each restore starts a new QEMU with -incoming and is timed from exec until
QMP reports it running after `cont` (what a user of QEMU snapshots waits for). Ours: a Python
template VM frozen at its first read of stdin, then N clones, each timed by vm-run (memory map, VM
and vCPU, registers, descriptors) until it runs. Prints medians and the ratio.

Usage: qemu_restore.py BUILD_DIR [RUNS]      (root, /dev/kvm, qemu-system-x86 installed)
"""
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

QEMU_ARGS = ["-M", "microvm", "-accel", "kvm", "-cpu", "host,-arch-capabilities,-cx16", "-m", "256",
             "-nodefaults", "-no-user-config", "-display", "none"]


class Qmp:
    def __init__(self, path, deadline_s=10):
        end = time.monotonic() + deadline_s
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > end:
                    raise
                time.sleep(0.0005)
        self.f = self.sock.makefile("rw")
        self.f.readline()  # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args} if args else {"execute": name}) + "\n")
        self.f.flush()
        while True:
            reply = json.loads(self.f.readline())
            if "return" in reply or "error" in reply:
                return reply

    def close(self):
        self.sock.close()


def qemu(work, extra):
    sock = os.path.join(work, "qmp-%d.sock" % time.monotonic_ns())
    p = subprocess.Popen(["qemu-system-x86_64", *QEMU_ARGS, "-qmp", "unix:%s,server=on,wait=off" % sock, *extra],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return p, sock


def wait_status(q, want, deadline_s=10):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if q.cmd("query-status")["return"]["status"] == want:
            return True
        time.sleep(0.0002)
    return False


def qemu_restores(work, runs):
    snap = os.path.join(work, "snap.bin")
    p, sock = qemu(work, [])
    q = Qmp(sock)
    time.sleep(1.0)  # the firmware runs and touches its memory
    q.cmd("stop")
    q.cmd("migrate", uri="exec:cat > " + snap)
    while q.cmd("query-migrate")["return"].get("status") not in ("completed", "failed"):
        time.sleep(0.01)
    q.cmd("quit")
    q.close()
    p.wait()
    size = os.path.getsize(snap)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        p, sock = qemu(work, ["-incoming", "exec:cat " + snap])
        q = Qmp(sock)
        if not wait_status(q, "paused"):
            raise RuntimeError("restore did not complete: " + p.stderr.read().decode() if p.poll() is not None else "")
        q.cmd("cont")
        wait_status(q, "running")
        times.append((time.perf_counter() - t0) * 1000)
        q.cmd("quit")
        q.close()
        p.wait()
    return times, size


def our_clones(build, runs):
    p = subprocess.run([os.path.join(build, "src", "sandpool"), "vm-run", "--memory", "256", "--clones", str(runs), "--",
                        "/usr/bin/python3", "-S", "-c", "import sys; exec(sys.stdin.readline())"],
                       input=b"print(1)\n", capture_output=True, timeout=300)
    ms = [float(m) for m in re.findall(rb"clone \d+: clone ([0-9.]+) ms", p.stderr)]
    if len(ms) != runs:
        raise RuntimeError("vm-run --clones failed: " + p.stderr.decode(errors="replace")[-2000:])
    return ms


def main():
    build = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    if not shutil.which("qemu-system-x86_64"):
        print("needs qemu-system-x86 (tools/install-deps.sh bench)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="sp-qemu-") as work:
        qemu_ms, size = qemu_restores(work, runs)
        ours = our_clones(build, runs)
    qm, om = statistics.median(qemu_ms), statistics.median(ours)
    print("QEMU %s -incoming exec:cat (stream %.1f MB): restore to running median %.1f ms (min %.1f, max %.1f, n=%d)"
          % (" ".join(QEMU_ARGS[:2]), size / 1e6, qm, min(qemu_ms), max(qemu_ms), runs))
    print("sandpool vm-run --clones (256 MiB guest, Python template): clone median %.3f ms (min %.3f, max %.3f, n=%d)"
          % (om, min(ours), max(ours), runs))
    print("ratio QEMU restore / our clone: %.0fx" % (qm / om))
    return 0


if __name__ == "__main__":
    sys.exit(main())
