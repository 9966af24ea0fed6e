"""The Python agent as the micro-VM runs it (serve_single under `sandpool vm-run`, session socket
= guest fd 3, control socket = fd 4, capture memfds = fds 1 and 2), spoken to with the agent unit
tests' client: output order, ping and interrupt during a cell and between cells, pipelined
requests, EOF, and the VM exits a warm print(1) cell costs (the batch call, src/vmm/README.md).
Usage: agent_vm_test.py PATH_TO_SANDPOOL. Exits 77 (skip) when /dev/kvm is unusable."""

import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "unit", "agent"))
from agent_client import A, Agent  # noqa: E402

SANDPOOL = None


class VmAgent(Agent):
    """agent_client.Agent over a guest running serve_single; close() returns the exit code."""

    def __init__(self, root):  # noqa: super().__init__ starts a native agent: not called
        host, guest = socket.socketpair()
        ctl_host, ctl_guest = socket.socketpair()
        out, err = os.memfd_create("out"), os.memfd_create("err")
        code = ("import sys; sys.path.insert(0, %r); import sandpool_agent as a; "
                "sys.exit(a.serve_single(3, 4, root=%r))" % (os.path.dirname(A.__file__), root))
        args = [SANDPOOL, "vm-run", "--stats", "--fd", "1=%d" % out, "--fd", "2=%d" % err,
                "--fd", "3=%d" % guest.fileno(), "--fd", "4=%d" % ctl_guest.fileno(), "--",
                "/usr/bin/python3", "-I", "-c", code]
        self.proc = subprocess.Popen(args, pass_fds=(out, err, guest.fileno(), ctl_guest.fileno()),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for fd in (out, err):
            os.close(fd)
        guest.close()
        ctl_guest.close()
        self.ctl = ctl_host
        self.stderr = b""
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()
        # GO: restarts 0, reason initial, no dead guest; the agent answers with its page address.
        ctl_host.sendall(struct.pack("<IIii", 0, A.R_INITIAL, 0, 0) + bytes(A.SHARED.size))
        self.sock = host
        self.buf = b""
        self.next_id = 0
        self.hellos = [self.read(timeout=120)]

    def _read_stderr(self):
        self.stderr = self.proc.stderr.read()

    def close(self):
        self.sock.close()
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._drain.join(10)
        self.ctl.close()
        return rc

    def exits(self):
        m = re.search(rb"syscalls (\d+),", self.stderr)
        return int(m.group(1)) if m else None


class AgentInVmTest(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="sandpool-vm-agent-")
        self.agent = VmAgent(self.root)

    def tearDown(self):
        self.assertEqual(self.agent.close(), 0, self.agent.stderr[-2000:])
        shutil.rmtree(self.root, ignore_errors=True)

    def ok(self, code, **kw):
        r = self.agent.execute(code, **kw)
        self.assertEqual(r.status, A.S_SUCCESS, r.stderr.decode())
        return r

    def test_output_order_and_values(self):
        r = self.ok("import ctypes, os, sys\nprint('a')\nos.write(1, b'b\\n')\nprint('c', end='')\n"
                    "ctypes.CDLL(None).write(1, b'd\\n', 2)\nsys.stderr.write('e\\n')\n"
                    "os.write(2, b'f\\n')\nprint('g')\n41 + 1")
        self.assertEqual((r.stdout, r.stderr, r.result), (b"a\nb\ncd\ng\n", b"e\nf\n", "42"))
        r = self.ok("1")  # a quiet cell after a loud one
        self.assertEqual((r.stdout, r.stderr), (b"", b""))
        r = self.agent.execute("print('x' * 1000)", limit=10)
        self.assertEqual((r.stdout, bool(r.flags & A.F_STDOUT_TRUNC)), (b"x" * 10, True))
        r = self.agent.execute("1/0")
        self.assertEqual(r.status, A.S_FAILURE)
        self.assertIn(b"ZeroDivisionError", r.stderr)

    def test_ping_between_and_during_cells_and_interrupt(self):
        self.ok("v = 1")
        self.assertEqual(self.agent.call(A.T_PING).type, A.T_PONG)  # not an execute after a reply
        self.assertEqual(self.ok("v + 1").result, "2")
        rid = self.agent.execute("import time\ntime.sleep(30)", wait=False)
        self.assertEqual(self.agent.call(A.T_PING).type, A.T_PONG)
        self.agent.send(A.T_INTERRUPT)
        self.assertEqual(self.agent.wait(rid).status, A.S_INTERRUPTED)
        self.assertEqual(self.ok("v").result, "1")

    def test_pipelined_requests(self):
        # Several frames in one write: the reply's exit must not wait for a request already read.
        p = struct.pack("<BII", 0, 10000, 65536)
        frames = b"".join(A.frame(A.T_EXEC, 100 + i, p + A._b(b"%d * 2" % i) + struct.pack("<II", 0, 0))
                          for i in range(5)) + A.frame(A.T_PING, 200)
        self.agent.sock.sendall(frames)
        got = [self.agent.read() for _ in range(6)]
        # The ping is answered as soon as the first cell starts (as in the process tier).
        self.assertEqual((got[0].type, got[0].id), (A.T_PONG, 200))
        self.assertEqual([(g.type, g.id, g.result) for g in got[1:]],
                         [(A.T_EXEC_REPLY, 100 + i, str(i * 2)) for i in range(5)])
        self.assertEqual(self.ok("3").result, "3")

    def test_interrupt_sent_with_the_request_stops_the_cell(self):
        p = struct.pack("<BII", 0, 10000, 65536)
        self.agent.sock.sendall(A.frame(A.T_EXEC, 300, p + A._b(b"import time\ntime.sleep(30)") +
                                        struct.pack("<II", 0, 0)) + A.frame(A.T_INTERRUPT, 301))
        r = self.agent.wait(300, timeout=20)
        self.assertEqual(r.status, A.S_INTERRUPTED)
        self.assertEqual(self.ok("4").result, "4")


class ExitCountTest(unittest.TestCase):
    def run_cells(self, n):
        root = tempfile.mkdtemp(prefix="sandpool-vm-agent-")
        try:
            a = VmAgent(root)
            for _ in range(n):
                r = a.execute("print(1)")
                self.assertEqual(r.stdout, b"1\n")
            self.assertEqual(a.close(), 0)
            return a.exits()
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def test_a_warm_print_cell_costs_four_exits(self):
        # With the batch call: reply+next read+O_ASYNC on+poll, print's one write (one_write_print;
        # the builtin makes two), O_ASYNC off+captures; plus the nudge here (no VMM watcher arms
        # the page under vm-run). 14 without the batch call.
        # Allowed up to 4.5: an asynchronous exit (a host signal interrupting KVM_RUN) now and then
        # falls inside the 20 cells measured (4.1 once in twelve runs on 11-29's slower-exit
        # machine instance); one more exit per cell would still fail.
        few, many = self.run_cells(5), self.run_cells(25)
        self.assertIsNotNone(few)
        per_cell = (many - few) / 20
        self.assertLessEqual(per_cell, 4.5, (few, many))


def main():
    global SANDPOOL
    SANDPOOL = sys.argv.pop(1)
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError as e:
        print(f"SKIP: /dev/kvm is not usable here ({e}); the micro-VM tests need KVM")
        sys.exit(77)
    unittest.main()


if __name__ == "__main__":
    main()
